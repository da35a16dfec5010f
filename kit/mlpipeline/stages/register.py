"""Stage `register`: the pipeline's MLflow run (params, per-epoch and test metrics, plots, model
card, drift profile, attributions, data report) with the exported ONNX model registered as a new
version of `tracking.registered_model`.

Its own stage, after export, so that editing plot or tracking code re-runs this alone. Its
output is a receipt of what was registered, which only the pipeline's inputs determine (the
run id and version differ on every run: they go to stdout and MLflow). The receipt is
persistent, so DVC's run cache never restores it in place of logging: a stage restored from
the cache would leave the store without the run.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from mlpipeline import tracking
from mlpipeline.artifacts import read_csv, read_json, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.sources import source_for
from mlpipeline.errors import PipelineError, redact
from mlpipeline.git import state


def register(cfg: Config) -> dict[str, Any]:
    """Log the run and register the model; write `paths.registration`; return the receipt."""
    paths = cfg.paths
    needed_files = (paths.onnx, paths.card, paths.profile, paths.metrics, paths.history)
    for needed in (*needed_files, paths.attributions):
        if not needed.is_file():
            raise PipelineError(f"{needed} not found: run the stages before register (dvc repro)")
    for folder in (paths.explain, paths.data_report):
        if not folder.is_dir():
            raise PipelineError(f"{folder} not found: run the stages before register (dvc repro)")
    card = read_json(cfg.paths.card)
    metrics = read_json(cfg.paths.metrics)
    git = state(tracking.repo_root())
    hashes = card["hashes"]
    check = card["export_check"] | {"max_abs_diff": onnx_difference(cfg, card)}
    example, signature = model_signature(cfg, card)
    names = [p.name for p in task_for(cfg.task).plots] + list(source_for(cfg).figures)
    figures = [cfg.paths.figures / f"{name}.png" for name in names]
    if missing := [str(f) for f in figures if not f.is_file()]:
        raise PipelineError(f"{missing[0]} not found: run the evaluate stage first (dvc repro)")
    logged = tracking.log_pipeline_run(
        uri=cfg.tracking.uri,
        experiment=cfg.tracking.experiment,
        registered_model=cfg.tracking.registered_model,
        params=cfg.dump(),
        history=read_csv(cfg.paths.history),
        metrics=metrics,
        tags={
            "git_commit": str(git["commit"]),
            "git_dirty": str(git["dirty"]),
            "data_md5": hashes["data"],
            "model_md5": hashes["model"],
            "onnx_md5": hashes["onnx"],
            **({"dvc_exp_name": name} if (name := os.environ.get("DVC_EXP_NAME")) else {}),
        },
        onnx_path=cfg.paths.onnx,
        card=card | {"git_commit": git["commit"], "export_check": check},
        artifacts=[cfg.paths.metrics, *figures],
        input_example=example,
        signature=signature,
        model_files=[cfg.paths.profile],
        attributions=read_json(cfg.paths.attributions)["attribution"],
        folders={"explain": cfg.paths.explain, "data_report": cfg.paths.data_report},
    )
    receipt = {
        "registered_model": cfg.tracking.registered_model,
        "experiment": cfg.tracking.experiment,
        "model_version": card["version"],
        "onnx_md5": hashes["onnx"],
    }
    write_json(cfg.paths.registration, receipt)
    print(
        f"registered {cfg.paths.onnx} as {cfg.tracking.registered_model} version "
        f"{logged['model_version']} (MLflow run {logged['run_id']}) at "
        f"{redact(tracking.tracking_uri(cfg.tracking.uri))}"
    )
    return receipt


def onnx_difference(cfg: Config, card: dict[str, Any]) -> float:
    """ONNX Runtime's largest difference from the reference outputs on this machine: it picks
    its kernels by CPU, so the figure goes to MLflow, never into a hashed file."""
    # ONNX Runtime's import is not free: the stage checks its config (and answers --help) first
    import onnxruntime as ort

    session = ort.InferenceSession(str(cfg.paths.onnx), providers=["CPUExecutionProvider"])
    output = card["output"]["name"]
    feeds = source_for(cfg).test_feeds(cfg, card)
    outputs = np.concatenate([session.run([output], f)[0] for f in feeds])
    return float(np.abs(outputs - np.load(cfg.paths.reference, allow_pickle=False)).max())


def model_signature(cfg: Config, card: dict[str, Any]) -> tuple[Any, Any]:
    """The registered model's input example and MLflow signature: the inputs as the data
    source's kind describes them, the output as the card does."""
    output = card["output"]
    outputs = Schema(
        [TensorSpec(np.dtype(np.float32), tuple(d or -1 for d in output["shape"]), output["name"])]
    )
    example, inputs = source_for(cfg).signature(cfg, card)
    return example, ModelSignature(inputs=inputs, outputs=outputs)


if __name__ == "__main__":
    run_stage(register)
