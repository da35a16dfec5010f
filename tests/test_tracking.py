"""mlpipeline.tracking against a local SQLite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_processes_opening_a_new_store_at_once_share_one_experiment(tmp_path: Path) -> None:
    # as the first `dvc queue start -j 2` does: without a lock one process's table migration
    # breaks the other's ("Online migration expected to match one row ...")
    code = "import sys; from mlpipeline.tracking import setup; print(setup(sys.argv[1], 'e'))"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
