"""The kit: composition and validation of conf/, the DVC stages and their runner, artifacts,
tracking, serving, drift, the image and stack tooling, orchestration and sweeps. It comes with
the template and is updated with it (`copier update`; kit/CHANGELOG.md); a project does not
edit it. What a project's own code may import from it is exported here, and only that.

Importing the package pins torch's CPU kernels (`mlpipeline.determinism`): it has to happen
before torch first computes, and every stage imports this package first.
"""

import os

from mlpipeline.determinism import pin_cpu_kernels
from mlpipeline.errors import PipelineError

__version__ = "0.2.0"
__all__ = ["PipelineError", "__version__"]

pin_cpu_kernels()
# ONNX Runtime (export, register) sends usage telemetry unless told not to before it starts
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
