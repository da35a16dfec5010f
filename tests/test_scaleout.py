"""Multi-process training: two-process DDP on the CPU, alone and inside a Hydra multirun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, run, tiny_overrides

from mlpipeline.compose import compose_stage
from mlpipeline.evaluate import evaluate
from mlpipeline.ingest import ingest
from mlpipeline.prepare import prepare

pytestmark = pytest.mark.slow

# DDP averages gradients over two half-batches of a different order, so the runs are not
# bitwise equal; on the digits test split they agree to within this accuracy.
DDP_TOLERANCE = 0.03


def test_two_process_cpu_ddp_matches_one_process(tmp_path: Path) -> None:
    scores = {}
    for trainer in ("default", "ddp_cpu"):
        base = tmp_path / trainer
        (base / "raw").mkdir(parents=True)
        params = base / "params.yaml"
        overrides = [*tiny_overrides(base), f"trainer={trainer}", "trainer.max_epochs=15"]
        cfg = compose_stage(ROOT / "conf", params, base / "stamp", overrides)
        ingest(cfg)
        prepare(cfg)
        # DDP re-launches the command for rank 1, so training runs in its own process
        out = run(["python", "-m", "mlpipeline.train", "--params", str(params)], base)
        assert ("MEMBER: 2/2" in out.stdout + out.stderr) == (trainer == "ddp_cpu")
        scores[trainer] = evaluate(cfg)["scalars"]["accuracy"]
    print(f"test accuracy: one process {scores['default']}, two-process DDP {scores['ddp_cpu']}")
    assert scores["default"] >= 0.9
    assert abs(scores["default"] - scores["ddp_cpu"]) <= DDP_TOLERANCE


def test_multirun_with_ddp_gives_one_directory_and_run_per_trial(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", "optimizer.lr=0.003,0.01", "trainer=ddp_cpu"]
    run([*cmd, "trainer.max_epochs=2", "hydra.sweep.dir=sweep"], tmp_path)
    trial_dirs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in trial_dirs] == ["0", "1"]
    assert all(json.loads((p / "result.json").read_text())["score"] > 0 for p in trial_dirs)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert sorted(runs["tags.mlpipeline.kind"]) == ["sweep", "trial", "trial"]
