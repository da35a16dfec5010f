"""The pipeline against a real MLflow tracking server (scripts/mlflow-server.sh, which
`make mlflow-server` runs) on the loopback interface: the run, its metrics, params and the
registered model version are read back through the MLflow client API and the server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import BIN, ROOT, free_port, run, set_in_conf, stages_run, stop, wait_for_server

from mlpipeline.config import load_config

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 180  # far longer than the server takes, even on a busy machine


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[dict[str, object]]:
    """scripts/mlflow-server.sh on 127.0.0.1 and a free port, SQLite backend and artifact
    store in tmp_path; yields its URL and artifact directory, and always stops it."""
    home = tmp_path / "server"
    home.mkdir()
    port = free_port()
    artifacts = home / "artifacts"
    log = (home / "server.log").open("w")
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS": str(artifacts),
        "MLFLOW_PORT": str(port),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [str(ROOT / "scripts/mlflow-server.sh"), "--workers", "1"],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{url}/health", STARTUP_TIMEOUT_S, lambda: server_log(home))
        yield {"url": url, "artifacts": artifacts, "home": home}
    finally:
        stop(proc)
        log.close()


def same_onnx_model(logged: Path, local: Path) -> None:
    """MLflow re-saves the model with its weights as external data, so the bytes differ:
    compare the graph and every weight instead."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    a, b = onnx.load(str(logged)), onnx.load(str(local))
    assert list(a.graph.node) == list(b.graph.node)
    assert (a.graph.input, a.graph.output) == (b.graph.input, b.graph.output)
    assert list(a.opset_import) == list(b.opset_import)
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def server_log(home: Path) -> str:
    return (home / "server.log").read_text(errors="replace")[-4000:]


def test_pipeline_logs_to_the_tracking_server_and_reads_back(
    tiny_repo: Path, tracking_server: dict[str, object], tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    url = str(tracking_server["url"])
    artifacts = Path(str(tracking_server["artifacts"]))
    repo_copy = tiny_repo  # reproduced (two epochs) against its local store, which is gone
    # a new experiment name re-runs compose and register, the one stage that talks to MLflow
    set_in_conf(repo_copy, "tracking/default.yaml", "experiment", "team")
    # helpers.run drops MLFLOW_TRACKING_URI from the environment: call dvc directly
    proc = subprocess.run(
        ["dvc", "repro"],
        cwd=repo_copy,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": url},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert stages_run(proc.stdout) == ["compose", "register"], proc.stdout
    assert url in proc.stdout, proc.stdout  # register names the store it logged to
    # nothing went to the default local store
    assert not (repo_copy / "mlflow.db").exists()
    assert not (repo_copy / "mlartifacts").exists()

    # validated: the registered model's name, null in params.yaml, is the data's (digits)
    conf = load_config(repo_copy / "params.yaml").tracking.model_dump()
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.get_experiment_by_name(conf["experiment"])
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.status == "FINISHED"

    # test metrics: those of reports/metrics.json, prefixed
    metrics = json.loads((repo_copy / "reports/metrics.json").read_text())
    for key, value in metrics.items():
        assert logged.data.metrics[f"test_{key}"] == pytest.approx(value)
    # per-epoch history: one point per epoch, as in reports/train/history.csv
    history = client.get_metric_history(logged.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1]
    lines = (repo_copy / "reports/train/history.csv").read_text().splitlines()
    header = lines[0].split(",")
    csv_val_loss = [float(line.split(",")[header.index("val_loss")]) for line in lines[1:]]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(csv_val_loss)
    # params: the composed config, flattened
    params = logged.data.params
    assert params["trainer.max_epochs"] == "2"
    assert params["seed"] == "0"
    assert params["tracking.registered_model"] == conf["registered_model"]
    assert logged.data.tags["onnx_md5"] == md5(repo_copy / "models/model.onnx")

    # the registered model version belongs to this run, and its files come through the server
    versions = client.search_model_versions(f"name = '{conf['registered_model']}'")
    assert [v.version for v in versions] == ["1"]
    version = versions[0]
    assert version.run_id == logged.info.run_id
    assert version.status == "READY"
    # a `models:/name/version` URI would be resolved in the default registry (not the
    # client's): go from the version to its logged model and that model's artifact location
    assert version.source.startswith("models:/m-")
    logged_model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged_model.source_run_id == logged.info.run_id
    assert logged_model.artifact_location.startswith("mlflow-artifacts:/")
    model_dir = Path(
        download_artifacts(
            artifact_uri=logged_model.artifact_location,
            dst_path=str(tmp_path / "model"),
            tracking_uri=url,
        )
    )
    assert (model_dir / "MLmodel").is_file()
    same_onnx_model(model_dir / "model.onnx", repo_copy / "models/model.onnx")
    card = json.loads(
        Path(
            client.download_artifacts(logged.info.run_id, "model_card.json", str(tmp_path))
        ).read_text()
    )
    assert card["hashes"]["onnx"] == md5(repo_copy / "models/model.onnx")
    # the bytes live in the server's artifact store, not on the client's side
    assert list(artifacts.rglob("model.onnx"))
    assert list(artifacts.rglob("model_card.json"))

    # a second run of the unchanged pipeline runs only compose and logs nothing
    again = run(["dvc", "repro"], repo_copy)
    assert stages_run(again.stdout) == ["compose"]
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_credentials_in_the_tracking_uri_are_never_printed(
    tiny_repo: Path, tracking_server: dict[str, object]
) -> None:
    # the server ignores credentials it was not set up to check: the run logs as it would
    url = str(tracking_server["url"])
    proc = subprocess.run(
        [sys.executable, "-m", "mlpipeline.stages.register"],
        cwd=tiny_repo,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": url.replace("http://", "http://user:s3cret@"),
        },
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    # neither the registration line nor MLflow's own lines (its links to the run) show it
    assert "s3cret" not in proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("registered ")]
    assert line.endswith(f" at {url.replace('http://', 'http://user:***@')}"), line
