"""Your project's own code: networks and LightningModules (`models/`), named by `_target_` in
conf/. From the kit it imports `mlpipeline.api` only."""
