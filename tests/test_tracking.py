"""mlpipeline.tracking against a local SQLite store, and the tracking URI as it is shown: with
its credentials masked (mlpipeline.errors.redact, scripts/mlflow-server.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, free_port

from mlpipeline import tracking
from mlpipeline.errors import PipelineError, redact


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


# (URI as configured, as shown): credentials masked, everything else as it was
SHOWN = [
    ("http://user:s3cret@mlflow.example:5000", "http://user:***@mlflow.example:5000"),
    ("https://user:p@ss:w0rd@host/mlflow?x=1", "https://user:***@host/mlflow?x=1"),
    ("https://s3cret-token@host/mlflow", "https://***@host/mlflow"),
    ("postgresql://mlflow:s3cret@db:5432/runs", "postgresql://mlflow:***@db:5432/runs"),
    (
        "postgresql://db/runs?sslmode=require&password=s3cret",
        "postgresql://db/runs?sslmode=require&password=***",
    ),
    ("s3://bucket/mlflow?X-Amz-Signature=s3cret&v=1", "s3://bucket/mlflow?X-Amz-Signature=***&v=1"),
    ("sqlite:////abs/path/mlflow.db", "sqlite:////abs/path/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
]


@pytest.mark.parametrize(("uri", "shown"), SHOWN)
def test_credentials_in_a_uri_are_masked_for_showing(uri: str, shown: str) -> None:
    assert redact(uri) == shown
    assert redact(f"store {uri} is not usable") == f"store {shown} is not usable"


@pytest.mark.parametrize(("uri", "shown"), SHOWN)
def test_the_server_script_shows_the_backend_uri_masked(
    tmp_path: Path, uri: str, shown: str
) -> None:
    # a stand-in for `mlflow` that reports what it was given: the script's own lines alone
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "mlflow"
    stub.write_text('#!/bin/sh\necho "argv: $*"\necho "env: $MLFLOW_BACKEND_STORE_URI"\n')
    stub.chmod(0o755)
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run(
        [str(ROOT / "scripts/mlflow-server.sh")],
        cwd=tmp_path,
        env={
            **os.environ,
            "VENV": str(venv),
            "MLFLOW_BACKEND_URI": uri,
            "MLFLOW_ARTIFACTS": str(artifacts),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    first = proc.stderr.splitlines()[0]
    assert first == f"mlflow-server: backend {shown}, artifacts {artifacts}, http://127.0.0.1:5000"
    # MLflow gets the URI whole, through its environment rather than the command line
    assert proc.stdout.splitlines()[1] == f"env: {uri}"
    if shown != uri:
        assert "s3cret" not in proc.stderr + proc.stdout.splitlines()[0]


def test_an_unreachable_store_is_named_with_its_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, no backoff
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    uri = f"http://user:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(PipelineError) as caught:
        tracking.setup(uri, "e")
    message = str(caught.value)
    assert message.startswith("MLflow tracking store http://user:***@127.0.0.1:"), message
    assert "s3cret" not in message and "\n" not in message


def test_attributions_of_columns_named_with_any_characters_are_valid_metric_names() -> None:
    from mlflow.utils.validation import _validate_metric_name

    names = ["bill_length_mm", "price ($)", "a/b", "..", "x:y", "top_left", "é"]
    metrics = tracking.attribution_metrics({n: 0.5 for n in names})
    assert list(metrics)[:2] == ["attribution/bill_length_mm", "attribution/price ___"]
    for name in metrics:
        _validate_metric_name(name)  # raises on a name MLflow refuses
    assert len(metrics) == len(names)
