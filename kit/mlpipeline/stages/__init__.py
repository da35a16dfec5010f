"""The pipeline's stages, one module per stage of dvc.yaml and named like it. Each reads its
inputs, calls the layers below (data, models, tracking) and writes its outputs; no stage
imports another, and only the sweep's trial imports them, to run the same stages on its own
paths (tests/test_architecture.py checks both)."""
