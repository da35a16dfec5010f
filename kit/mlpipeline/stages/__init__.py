"""The pipeline's stages, one module per stage of dvc.yaml and named like it. Each reads its
inputs, calls the layers below (data, models, tracking) and writes its outputs; no module
imports a stage (tests/test_architecture.py checks it)."""
