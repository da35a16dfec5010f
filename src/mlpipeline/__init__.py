"""Reproducible, data-versioned ML pipeline: DVC stages over data, model and tracking layers,
and a torch-free model service.

Importing the package pins torch's CPU kernels (`mlpipeline.determinism`): it has to happen
before torch first computes, and every stage imports this package first.
"""

import os

from mlpipeline.determinism import pin_cpu_kernels

pin_cpu_kernels()
# ONNX Runtime (export, register) sends usage telemetry unless told not to before it starts
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
