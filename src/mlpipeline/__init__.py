"""Reproducible, data-versioned ML pipeline: DVC stages over data, model and tracking layers,
and a torch-free model service.

Importing the package pins torch's CPU kernels (`mlpipeline.determinism`): it has to happen
before torch first computes, and every stage imports this package first.
"""

from mlpipeline.determinism import pin_cpu_kernels

pin_cpu_kernels()
