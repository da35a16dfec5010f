"""What a sweep's processes hand each other: the files in the sweep directory and the variable
DDP ranks read. The trial and the summary both import them from here."""

from __future__ import annotations

from pathlib import Path

# Lightning's DDP launcher re-runs this command (multirun flags included) for ranks 1..N-1;
# rank 0 passes them its resolved trial config here so they join its training and do nothing else
TRIAL_ENV = "MLPIPELINE_DDP_TRIAL"
# each trial's score, overrides and MLflow run, in its own directory
RESULT_FILE = "result.json"
# the sweep's MLflow run id, in the sweep directory, where every launcher's trials find it (the
# joblib launcher's workers fork from a server started before the run exists: no environment)
PARENT_RUN_FILE = ".mlflow_parent_run"


def parent_run(sweep_dir: Path) -> str | None:
    """The sweep's MLflow run id, once `SweepSummary` has opened it."""
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
