"""The model service: the exported ONNX model behind FastAPI, on ONNX Runtime, without torch.

Settings come from environment variables (`settings`); `python -m mlpipeline.serving` runs
uvicorn. Nothing here imports torch, Lightning or anything of mlpipeline outside this folder:
the serving image copies this folder alone (tests/serving/test_isolation.py checks it).
"""

import os

# ONNX Runtime sends usage telemetry unless told not to before it starts; a served model has
# no business phoning home. A value already set wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
