"""Reproducible, data-versioned ML pipeline: DVC stages over data, model and tracking layers,
and a torch-free model service.

Importing it changes nothing in the process: each entry point (a stage's CLI, the sweep, the
service) calls `mlpipeline.determinism.prepare_process` first, before torch first computes.
"""
