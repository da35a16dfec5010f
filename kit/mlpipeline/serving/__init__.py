"""The model service: the exported ONNX model behind FastAPI, on ONNX Runtime, without torch.

Settings come from environment variables (`settings`); `python -m mlpipeline.serving` runs
uvicorn. Nothing here imports torch, Lightning or anything of mlpipeline outside this folder:
the serving image copies this folder alone (tests/serving/test_isolation.py checks it).
Importing it changes no environment variable: `__main__` turns ONNX Runtime's telemetry off.
"""
