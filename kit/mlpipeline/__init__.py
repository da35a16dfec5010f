"""The kit: composition and validation of conf/, the DVC stages and their runner, artifacts,
tracking, serving, drift, the image and stack tooling, orchestration and sweeps. It comes with
the template and is updated with it (`copier update`; CHANGELOG.md); a project does not
edit it. What a project's own code may import from it is `mlpipeline.api`, and only that.

Importing it changes nothing in the process: each entry point (a stage's CLI, the sweep, the
service) calls `mlpipeline.determinism.prepare_process` first, before torch first computes.
"""

__version__ = "0.5.0"
