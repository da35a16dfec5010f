"""Your data sources: a class here, named by `_target_` in conf/data/, reads your data
(docs/your-data.md). The ingest, prepare and features stages depend on this folder."""
