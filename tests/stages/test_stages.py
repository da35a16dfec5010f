"""Stages train, evaluate, export and register in-process on a two-epoch run, MLflow store
included."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import export_table_model, mixed_table
from mlflow import MlflowClient

from mlpipeline.artifacts import md5_dir, md5_file, read_json
from mlpipeline.config.tasks import Classification
from mlpipeline.data.sources import Digits
from mlpipeline.data.splits import read_split
from mlpipeline.errors import PipelineError
from mlpipeline.models.modelfile import load_model
from mlpipeline.models.training import HISTORY_COLUMNS
from mlpipeline.serving.profile import read_profile
from mlpipeline.stages.data_report import data_report
from mlpipeline.stages.evaluate import evaluate
from mlpipeline.stages.explain import explain
from mlpipeline.stages.export import export
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.profile import profile
from mlpipeline.stages.register import register
from mlpipeline.stages.train import train


@pytest.fixture
def trained(make_cfg):
    cfg = make_cfg()
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    result = train(cfg)
    return cfg, result


def test_train_writes_model_and_epoch_history(trained) -> None:
    cfg, result = trained
    _network, spec = load_model(cfg.paths.model)
    assert spec["num_classes"] == 10 and spec["in_shape"] == [1, 8, 8]
    header, *rows = cfg.paths.history.read_text().splitlines()
    assert header == ",".join(HISTORY_COLUMNS)
    assert rows[0].split(",")[HISTORY_COLUMNS.index("val_mae")] == "", "regression's: empty"
    assert len(rows) == result.epochs == 2


def test_an_optimizer_value_its_class_refuses_is_one_line(make_cfg) -> None:
    cfg = make_cfg("optimizer.weight_decay=-1")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    with pytest.raises(PipelineError, match=r"^optimizer or scheduler: .*weight_decay") as err:
        train(cfg)
    assert "\n" not in str(err.value)


def test_training_twice_gives_identical_bytes(trained) -> None:
    cfg, _ = trained
    first = md5_file(cfg.paths.model)
    train(cfg)
    assert md5_file(cfg.paths.model) == first


def test_evaluate_writes_metrics_and_plot_data(trained) -> None:
    cfg, _ = trained
    result = evaluate(cfg)
    metrics = json.loads(cfg.paths.metrics.read_text())
    assert set(metrics) >= {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "auroc_macro",
    }
    assert 0 <= metrics["accuracy"] <= 1 and metrics["test_samples"] == 270
    assert len(result["files"]["confusion"]) == 270
    for name in ("confusion", "roc", "pr", "per_class"):
        assert len((cfg.paths.eval / f"{name}.csv").read_text().splitlines()) > 1
    # the task's files alone: no regression file, not even a header
    assert sorted(p.name for p in cfg.paths.eval.iterdir()) == [
        "confusion.csv",
        "per_class.csv",
        "pr.csv",
        "roc.csv",
    ]
    # its plots as PNGs, one per panel of `dvc plots show`
    figures = sorted(p.name for p in cfg.paths.figures.iterdir())
    # and the data kind's own: digits are images, with a grid of the largest losses
    assert figures == sorted(
        f"{n}.png" for n in [*(p.name for p in Classification.plots), *Digits.figures]
    )
    assert all((cfg.paths.figures / f).read_bytes().startswith(b"\x89PNG") for f in figures)
    first = md5_dir(cfg.paths.figures)
    evaluate(cfg)
    assert md5_dir(cfg.paths.figures) == first, "the PNGs' bytes follow from the data"


def test_export_matches_pytorch_and_register_logs_a_version(trained) -> None:
    cfg, _ = trained
    evaluate(cfg)
    card = export(cfg)
    assert not Path(cfg.tracking.uri.removeprefix("sqlite:///")).exists(), "export logs nothing"
    x, _ = read_split(cfg.paths.prepared, "test")
    session = ort.InferenceSession(str(cfg.paths.onnx))
    for batch in (1, 7, len(x)):  # the batch axis is dynamic
        probs = session.run(None, {"input": x[:batch]})[0]
        assert probs.shape == (batch, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert card["hashes"]["onnx"] == md5_file(cfg.paths.onnx)
    assert json.loads(cfg.paths.card.read_text()) == card

    profile(cfg)
    data_report(cfg)
    attributions = explain(cfg)["attribution"]
    receipt = register(cfg)
    assert read_json(cfg.paths.registration) == receipt
    assert receipt["onnx_md5"] == card["hashes"]["onnx"]
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    (version,) = client.search_model_versions(f"name = '{cfg.tracking.registered_model}'")
    run = client.get_run(version.run_id)
    assert run.data.tags["onnx_md5"] == card["hashes"]["onnx"]
    assert run.data.params["optimizer.lr"] == str(cfg.optimizer.kwargs()["lr"])
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
    assert run.data.metrics["test_accuracy"] == card["metrics"]["accuracy"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {
        "reports/confusion.png",
        "reports/accuracy.png",
        "reports/largest_loss.png",
    } <= artifacts
    # the explain stage's attributions as metrics; its folder under explain/, the data
    # report's under data_report/
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("attribution/")} == {
        f"attribution/{name}": value for name, value in attributions.items()
    }
    assert {a.path for a in client.list_artifacts(run.info.run_id, "explain")} == {
        "explain/explain.json", "explain/importance.csv", "explain/importance.png",
        "explain/heatmaps_correct.png", "explain/heatmaps_wrong.png",
    }  # fmt: skip
    assert {"data_report/report.md", "data_report/report.json", "data_report/label.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "data_report")
    }
    logged_card = client.download_artifacts(run.info.run_id, "model_card.json", str(cfg.paths.eval))
    check = json.loads(Path(logged_card).read_text())["export_check"]
    assert 0 <= check["max_abs_diff"] <= cfg.export.atol
    logged_profile = client.download_artifacts(run.info.run_id, "profile.json", str(cfg.paths.eval))
    assert Path(logged_profile).read_bytes() == cfg.paths.profile.read_bytes()


def price_model(bias: float):
    """A regression network answering `bias` dollars at x = 0, as a model of prices does whose
    training targets had a standard deviation of 4,000."""
    import torch

    network = torch.nn.Linear(3, 1)
    with torch.no_grad():
        network.weight.fill_(400.0)
        network.bias.fill_(bias)
    return network


def test_the_export_check_of_a_regression_follows_the_targets_scale(tmp_path: Path) -> None:
    from mlpipeline.stages.export import check_onnx, to_onnx

    x = np.zeros((8, 3), np.float32)
    path = tmp_path / "model.onnx"
    to_onnx(price_model(300.0), x[:2], path, 17, "regression")
    meta = {"target": {"mean": 3900.0, "std": 4000.0}}
    # a thousandth of a dollar on prices that spread over thousands: float32's rounding passes
    diff, _ = check_onnx(path, price_model(300.004), x, 1e-5, 1e-5, "regression", None, meta)
    assert diff == pytest.approx(0.004, rel=0.01)
    # five dollars off is a broken export, and the message speaks of predictions, not classes
    with pytest.raises(PipelineError) as err:
        check_onnx(path, price_model(305.0), x, 1e-5, 1e-5, "regression", None, meta)
    assert str(err.value) == (
        "ONNX model disagrees with PyTorch on the test split: 8 predictions differ by more "
        "than export.atol 1e-05 x the training target's std 4000 + export.rtol 1e-05 x |value| "
        "(largest difference 5.00e+00); try another export.opset or loosen export.atol / "
        "export.rtol"
    )


def test_the_export_check_of_a_classification_counts_classes(tmp_path: Path) -> None:
    import torch

    from mlpipeline.stages.export import check_onnx, to_onnx

    def network(sign: float) -> torch.nn.Module:
        layer = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            layer.weight.copy_(sign * torch.eye(2))
        return layer

    x = np.eye(2, dtype=np.float32)
    path = tmp_path / "model.onnx"
    to_onnx(network(1.0), x, path, 17, "classification")
    assert check_onnx(path, network(1.0), x, 1e-5, 1e-5, "classification", None, {})[0] < 1e-6
    with pytest.raises(PipelineError) as err:
        check_onnx(path, network(-1.0), x, 1e-5, 1e-5, "classification", None, {})
    assert str(err.value).startswith(
        "ONNX model disagrees with PyTorch on the test split: 4 probabilities differ by more "
        "than export.atol 1e-05 + export.rtol 1e-05 x |value| (largest difference 4.62e-01) "
        "and 2 rows get another predicted class; "
    )


def test_profile_bins_the_training_images_and_the_predictions_the_same_every_time(
    trained,
) -> None:
    cfg, _ = trained
    written = profile(cfg)
    assert read_json(cfg.paths.profile) == written
    first = md5_file(cfg.paths.profile)
    profile(cfg)
    assert md5_file(cfg.paths.profile) == first, "the bytes follow from the inputs"
    reference = read_profile(cfg.paths.profile)
    assert reference.input == "tensor" and reference.rows == 1257
    assert reference.model_md5 == md5_file(cfg.paths.model)
    assert [c.name for c in reference.columns] == ["channel_0_mean", "channel_0_std"]
    for part in [*reference.columns, reference.prediction]:
        assert abs(sum(part.shares) - 1) < 1e-9
    for column in reference.columns:  # quantile bins: about a tenth of the rows each
        assert len(column.shares) == 10 and max(column.shares) < 0.15
    assert reference.prediction.bins() == [str(c) for c in range(10)]


def test_profile_of_a_table_bins_each_raw_column_by_its_kind(tmp_path: Path) -> None:
    cfg = export_table_model(tmp_path, "regression")
    reference = read_profile(cfg.paths.profile)
    assert reference.input == "records"
    columns = {c.name: c for c in reference.columns}
    assert {n: c.kind for n, c in columns.items()} == {
        "width": "numeric",
        "color": "categorical",
        "flag": "categorical",
        "count": "numeric",
    }
    assert columns["width"].bins()[-1] == "missing" and columns["width"].shares[-1] > 0
    # count holds 0..4: coinciding quantiles merge, so fewer bins than configured
    assert len(columns["count"].edges) < cfg.monitoring.profile.bins - 1
    assert columns["color"].bins() == ["red", "green", "blue", "violet", "(other)", "(missing)"]
    assert columns["color"].known == ["blue", "green", "red", "violet"]
    assert columns["flag"].bins()[:2] in (["false", "true"], ["true", "false"])
    assert reference.prediction.kind == "score" and len(reference.prediction.shares) == 10


def test_a_binary_task_reports_its_positive_class(tmp_path: Path) -> None:
    frame = mixed_table(400)
    frame["target"] = np.where(frame["target"] == "high", "yes", "no")
    cfg = export_table_model(tmp_path, "classification", 400, "evaluate.positive_class=yes",
                             frame=frame)  # fmt: skip
    metrics = read_json(cfg.paths.metrics)
    positive = {"positive_precision", "positive_recall", "positive_f1", "positive_pr_auc"}
    assert positive <= set(metrics) and {"f1_macro", "accuracy"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in positive)
    with pytest.raises(PipelineError, match=r"positive_class 'maybe' needs a binary task"):
        evaluate(cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(
            update={"positive_class": "maybe"})}))  # fmt: skip


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_table_model_registers_with_its_columns_as_optional_inputs(
    tmp_path: Path, task: str
) -> None:
    import mlflow
    import pandas as pd

    cfg = export_table_model(tmp_path, task)
    register(cfg)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.registered_model}/1")
    inputs = model.metadata.signature.inputs
    assert inputs.input_names() == ["width", "color", "flag", "count"]
    assert not any(spec.required for spec in inputs.inputs)
    # MLflow's own ONNX flavour runs it on a DataFrame of the columns, a missing number included
    frame = pd.DataFrame(
        {
            "width": [10.0, None],
            "color": ["red", "blue"],
            "flag": ["true", "false"],
            "count": [1.0, 2.0],
        }
    )
    out = model.predict(frame)
    assert len(out) == (2 if task == "regression" else 6)  # MLflow flattens the 2-D output


def test_trainer_clipping_and_accumulation_settings_apply(make_cfg) -> None:
    # Lightning's own Trainer settings: the gradients after each optimizer step are clipped
    import lightning as L
    import torch

    class Watch(L.Callback):
        def __init__(self) -> None:
            self.norms: list[float] = []
            self.steps = 0

        def on_train_batch_end(self, trainer, module, *_) -> None:
            if trainer.global_step == self.steps:
                return  # an accumulating batch: no step yet
            self.steps = trainer.global_step
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            self.norms.append(
                float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            )

    cfg = make_cfg(
        "+trainer.gradient_clip_val=0.001",
        "+trainer.accumulate_grad_batches=4",
        "trainer.max_epochs=1",
    )
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    watch = Watch()
    train(cfg, callbacks=[watch])
    assert watch.steps == 5  # 20 batches of 64, a step every 4
    assert len(watch.norms) == 5 and max(watch.norms) <= 0.001 * (1 + 1e-4)


# a stage run in its own process that dies (SIGKILL) at a chosen point: argv[1] the params
# file, argv[2] the point
KILLED = """
import os, signal, sys

from lightning.pytorch.callbacks import ModelCheckpoint

from mlpipeline.config import load_config
from mlpipeline.stages import export, train

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

save = ModelCheckpoint._save_checkpoint

def saved_then_die(self, trainer, filepath):
    save(self, trainer, filepath)
    die()

cfg = load_config(sys.argv[1])
if sys.argv[2] == "export":  # the ONNX file written, not yet checked nor moved into place
    export.check_onnx = die
    export.export(cfg)
else:  # a checkpoint on disk, the model file not yet written
    ModelCheckpoint._save_checkpoint = saved_then_die
    train.train(cfg)
"""


def killed_run(cfg, stage: str, tmp_path: Path) -> Path:
    """Run `stage` in a process killed mid-run, with its own empty system temporary
    directory; return that directory."""
    import subprocess
    import sys

    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.dump(), sort_keys=False), encoding="utf-8")
    system_tmp = tmp_path / f"system-tmp-{stage}"
    system_tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(params), stage],
        env={**os.environ, "TMPDIR": str(system_tmp)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return system_tmp


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_killed_export_leaves_nothing_its_next_run_keeps(trained, tmp_path: Path) -> None:
    cfg, _ = trained
    evaluate(cfg)
    models = cfg.paths.onnx.parent
    before = hidden(models)
    killed_run(cfg, "export", tmp_path)
    assert len(hidden(models)) == len(before) + 3  # the ONNX file's, the card's, the reference's
    assert not cfg.paths.onnx.exists()
    card = export(cfg)
    assert hidden(models) == before
    assert card["hashes"]["onnx"] == md5_file(cfg.paths.onnx)


def test_a_killed_training_leaves_nothing_its_next_run_keeps(trained, tmp_path: Path) -> None:
    cfg, _ = trained
    first = md5_file(cfg.paths.model)
    cfg.paths.model.unlink()
    models = cfg.paths.model.parent
    before = hidden(models)
    system_tmp = killed_run(cfg, "train", tmp_path)
    assert list(system_tmp.iterdir()) == []  # the checkpoint is kept beside the model
    (leftover,) = set(hidden(models)) - set(before)
    assert list((models / leftover).glob("*.ckpt"))
    assert not cfg.paths.model.exists()
    train(cfg)
    assert hidden(models) == before
    assert md5_file(cfg.paths.model) == first


def test_a_table_model_takes_columns_named_with_any_characters(tmp_path: Path) -> None:
    import warnings

    import pyarrow.parquet as pq

    from mlpipeline.serving.app import create_app
    from mlpipeline.serving.settings import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Starlette 1.x's httpx2 hint
        from fastapi.testclient import TestClient

    odd = {"width": "x one", "color": "c.olor/é", "flag": "x_one", "count": "n°: count"}
    cfg = export_table_model(tmp_path, frame=mixed_table().rename(columns=odd))
    assert [c["name"] for c in read_json(cfg.paths.card)["input"]["columns"]] == list(odd.values())
    session = ort.InferenceSession(str(cfg.paths.onnx))
    assert [i.name for i in session.get_inputs()] == list(odd.values())
    # the service takes records by the data's own names and answers as the export checked
    rows = pq.read_table(cfg.paths.prepared / "test" / "x.parquet").to_pylist()
    with TestClient(create_app(Settings(model_path=cfg.paths.onnx, max_batch=64))) as client:
        body = client.post("/predict", json={"records": rows[:32]}).json()
    probs = np.array([list(p.values()) for p in body["probabilities"]])
    assert np.abs(probs - np.load(cfg.paths.reference)[:32]).max() < 1e-5
