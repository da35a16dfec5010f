"""Your project's own code: networks and LightningModules (`models/`), named by `_target_` in
conf/. It imports from the kit (`mlpipeline`) only what `mlpipeline.__all__` exports."""
