"""The real `dvc repro` of the whole pipeline in temporary copies of this repository: once,
tiny, in the fast tier; in full, and again after edits, in the slow tier. The stages' refusals
of bad input, each in a stage process of its own."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CONF,
    ROOT,
    STAGES,
    UP_TO_DATE,
    assert_one_line_per_stage,
    lock_outs,
    make_command,
    plot_panels,
    run,
    set_in_conf,
    stages_run,
)

from mlpipeline.serving.app import create_app
from mlpipeline.serving.settings import Settings

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the pinned httpx works
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


def test_dvc_repro_trains_exports_registers_and_the_app_answers(
    tiny_baseline: Path, tiny_repo: Path
) -> None:
    """The fast tier's one real pipeline (tiny_baseline): `dvc repro` composed conf/ with Hydra,
    fitted two epochs with Lightning, exported ONNX after its parity check, registered a version
    in MLflow, and left nothing stale; the real app then answers as the export stage did."""
    log = (tiny_baseline.parent / "dvc-repro.log").read_text()
    # an image's features are its prepared arrays as they are: where the copy has the demo's
    # dvc.lock DVC restores them from the cache, else the stage runs (a project on its own
    # data); the data report reads the prepared splits alone, which the demo's committed
    # report already describes
    assert set(STAGES) - {"features", "data_report"} <= set(stages_run(log)), log
    assert run(["dvc", "status"], tiny_repo).stdout == UP_TO_DATE
    params = (tiny_repo / "params.yaml").read_text()
    assert "max_epochs: 2" in params and "_target_: myproject.models.nets.CNN" in params
    history = (tiny_repo / "reports/train/history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # a header, then one line per epoch
    assert json.loads((tiny_repo / "reports/metrics.json").read_text())["accuracy"] > 0.5
    card = json.loads((tiny_repo / "models/model_card.json").read_text())
    registration = json.loads((tiny_repo / "models/registration.json").read_text())
    assert registration["onnx_md5"] == card["hashes"]["onnx"]
    assert "as digits version 1 (MLflow run" in log

    x = np.load(tiny_repo / "data/prepared/test/x.npy")[:8]
    reference = np.load(tiny_repo / "models/reference.npy")[:8]
    app = create_app(Settings(model_path=tiny_repo / "models/model.onnx"))
    with TestClient(app) as client:
        answer = client.post("/predict", json={"inputs": x.tolist()})
    assert answer.status_code == 200, answer.text
    probabilities = [list(p.values()) for p in answer.json()["probabilities"]]
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)


def test_dvc_repro_prints_one_line_per_stage_and_no_warning(tiny_baseline: Path) -> None:
    """The fast tier's pipeline printed no line a user can do nothing about (Lightning's
    accelerator lines and layer table, MLflow's INFO lines, its warning about CUDA's execution
    provider, its registration lines): one line per stage, one per epoch."""
    log = (tiny_baseline.parent / "dvc-repro.log").read_text()
    err = (tiny_baseline.parent / "dvc-repro.err").read_text()
    assert_one_line_per_stage(subprocess.CompletedProcess(["dvc", "repro"], 0, log, err))


def test_dvc_plots_show_the_tasks_plots_titled_and_none_empty(tiny_repo: Path) -> None:
    """A classification's panels and the explain stage's, each titled and drawn from rows;
    none of a regression's (empty), none untitled (a plot file drawn against the row number)."""
    from mlpipeline.config.tasks import Classification
    from mlpipeline.plots import IMPORTANCE

    plots = [*Classification.plots, IMPORTANCE]
    panels = plot_panels(tiny_repo)
    assert list(panels) == [p.title for p in plots]
    assert all(filled == rows > 0 for rows, filled in panels.values()), panels
    assert sorted(p.name for p in (tiny_repo / "reports/eval").iterdir()) == [
        "confusion.csv",
        "per_class.csv",
        "pr.csv",
        "roc.csv",
    ]
    # against a revision, each plot shows both, with no error for the unchanged files
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], tiny_repo).stdout)
    assert list(diff["data"]) == [p.name for p in plots]
    assert not diff.get("errors"), diff.get("errors")


@pytest.mark.slow
def test_make_pipeline_reproduces_the_committed_lock_bit_for_bit(repo_copy: Path) -> None:
    # the README's first command, with the running venv (its install stamp: no reinstall)
    out = run(make_command("pipeline"), repo_copy).stdout
    # evaluate's, crossval's, explain's and data_report's outputs are committed (cache: false),
    # and the model and the prepared data come out byte-identical to the lock's, so DVC finds
    # them up to date; an image's features are its prepared arrays as they are, which DVC then
    # checks out from prepare's outputs in its cache
    skipped = {"evaluate", "crossval", "features", "data_report", "explain"}
    assert sorted(stages_run(out)) == sorted(set(STAGES) - skipped)
    assert "Stage 'features' is cached - skipping run, checking out outputs" in out
    committed = lock_outs(ROOT)
    differ = sorted(p for p, h in lock_outs(repo_copy).items() if committed.get(p) != h)
    # the outputs that differ first: the rest of dvc.lock records their hashes again
    assert not differ, f"outputs differ from the committed dvc.lock: {differ}"
    assert (repo_copy / "dvc.lock").read_text() == (ROOT / "dvc.lock").read_text()
    metrics = json.loads((repo_copy / "reports/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.95

    again = run(["dvc", "repro"], repo_copy)
    assert stages_run(again.stdout) == ["compose"]
    # Python's bytecode caches beside the sources the stages depend on change no stage's hash
    cache = repo_copy / "kit/mlpipeline/config/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "schema.cpython-311.pyc").write_bytes(b"\x00" * 16)
    assert run(["dvc", "status"], repo_copy).stdout == UP_TO_DATE

    # training again gives the same bytes (the committed lock came from another machine's run)
    first = lock_outs(repo_copy)
    forced = run(["dvc", "repro", "--force", "--single-item", "train"], repo_copy)
    assert stages_run(forced.stdout) == ["train"]
    assert lock_outs(repo_copy) == first


@pytest.mark.slow
def test_evaluation_param_reruns_evaluate_not_train(tiny_repo: Path) -> None:
    set_in_conf(tiny_repo, "config.yaml", "evaluate.calibration_bins", 5)
    ran = stages_run(run(["dvc", "repro"], tiny_repo).stdout)
    # export and register follow only if metrics.json changed; data and training stages never
    assert ran[:2] == ["compose", "evaluate"]
    assert set(ran) <= {"compose", "evaluate", "export", "register"}
    diff = run(["dvc", "params", "diff", "--all"], tiny_repo).stdout
    assert "evaluate.calibration_bins" in diff


BAD_INPUTS = {
    "missing-file": ("ingest", ["data=tabular"], None, "data.source.path"),
    "no-label-column": (
        "ingest",
        ["data=tabular"],
        "a,b\n1,2\n3,4\n",
        "label column 'label' not in",
    ),
    "missing-labels": (
        "ingest",
        ["data=tabular"],
        "a,label\n" + "1,\n" + "1,x\n2,y\n" * 10,
        "1 of 21 rows of data/raw/data.csv have no 'label'",
    ),
    "inf-values": (
        "features",
        ["data=tabular"],
        "a,label\n" + "inf,x\n" + "1,x\n2,y\n" * 10,
        "column 'a' has infinite values",
    ),
    "single-sample-class": (
        "prepare",
        ["data=tabular"],
        "a,label\n" + "1,x\n2,y\n" * 10 + "3,z\n",
        "'z' has 1",
    ),
    "unknown-source-kind": (
        "compose",
        ["data.source.kind=xlsx"],
        None,
        "'digits', 'csv', 'parquet'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_stops_the_stage_with_one_line_and_no_output(tmp_path: Path, case: str) -> None:
    stage, overrides, csv_text, message = BAD_INPUTS[case]
    (tmp_path / "data/raw").mkdir(parents=True)
    if csv_text is not None:
        (tmp_path / "data/raw/data.csv").write_text(csv_text)
    compose = [
        "python",
        "-m",
        "mlpipeline.stages.compose",
        "--conf",
        str(CONF),
        *overrides,
    ]
    composed = run(compose, tmp_path, check=stage != "compose")
    if stage == "compose":
        proc = composed
    else:
        for before in ("ingest", "prepare", "features")[
            : ("ingest", "prepare", "features").index(stage)
        ]:
            run(["python", "-m", f"mlpipeline.stages.{before}"], tmp_path)
        proc = run(["python", "-m", f"mlpipeline.stages.{stage}"], tmp_path, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    target = {
        "compose": "params.yaml",
        "ingest": "data/ingested",
        "prepare": "data/prepared",
        "features": "data/features",
    }[stage]
    assert not (tmp_path / target).exists()
    assert not [
        p for p in (tmp_path / "data").rglob(".*") if p.name.startswith(f".{Path(target).name}.")
    ]
