"""Stage `export`: ONNX model with a dynamic batch axis, checked against PyTorch, plus a model
card, and the pipeline's MLflow run with the model registered as a new version.

The check runs both models on the whole test split: the largest probability difference must
stay within export.atol and every predicted class must agree, else nothing is written.
The card holds only what the pipeline's inputs determine (so dvc.lock stays reproducible);
the git commit, MLflow run id and registry version go to MLflow and into the image labels.
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import atomic_path, json_text, md5_dir, md5_file, read_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.errors import PipelineError

INPUT, OUTPUT = "input", "probabilities"


def to_onnx(network: Any, example: np.ndarray, path: Path, opset: int) -> None:
    """Export network + softmax with a dynamic batch axis (TorchScript-based exporter:
    deterministic bytes and no extra dependencies)."""
    import torch

    wrapped = torch.nn.Sequential(network, torch.nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (see above); its deprecation notice is noise
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, wrapped, example, path, opset)


def _export(torch: Any, wrapped: Any, example: np.ndarray, path: Path, opset: int) -> None:
    torch.onnx.export(
        wrapped,
        (torch.from_numpy(example),),
        str(path),
        dynamo=False,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=opset,
    )


def check_onnx(path: Path, network: Any, x: np.ndarray, atol: float) -> tuple[float, np.ndarray]:
    """Compare ONNX Runtime with PyTorch on `x`; return the max abs probability difference
    and PyTorch's probabilities, the reference outputs for the serving checks (ONNX Runtime
    picks its kernels by CPU and cannot be pinned, so its last bits vary between machines)."""
    import onnxruntime as ort

    from mlpipeline.nets import predict_proba

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p_onnx = session.run([OUTPUT], {INPUT: x})[0]
    p_torch = predict_proba(network, x).numpy()
    diff = float(np.abs(p_onnx - p_torch).max())
    mismatched = int((p_onnx.argmax(1) != p_torch.argmax(1)).sum())
    if diff > atol or mismatched:
        raise PipelineError(
            f"ONNX model disagrees with PyTorch on the test split: max |p_onnx - p_torch| = "
            f"{diff:.2e} (export.atol {atol:g}), {mismatched} different predicted classes; "
            "try another export.opset or loosen export.atol"
        )
    return diff, p_torch


def model_card(
    cfg: Config,
    spec: dict[str, Any],
    meta: dict[str, Any],
    onnx_md5: str,
    metrics: dict[str, Any],
    n_test: int,
) -> dict[str, Any]:
    """Everything a consumer of the ONNX file needs, and where it came from."""
    return {
        "name": cfg.tracking.registered_model,
        "version": onnx_md5[:12],
        "format": "onnx",
        "opset": cfg.export.opset,
        "input": {
            "name": INPUT,
            "dtype": "float32",
            "shape": [None, *meta["input_shape"]],
            "feature_names": meta["feature_names"],
        },
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [None, len(meta["classes"])]},
        "classes": meta["classes"],
        "preprocessing": {
            "normalization": meta["normalization"],
            "applied_inside_model": True,
            "note": "send raw features; the model subtracts mean and divides by std itself",
        },
        "metrics": metrics,
        "hashes": {
            "data": md5_dir(cfg.paths.prepared),
            "model": md5_file(cfg.paths.model),
            "onnx": onnx_md5,
        },
        "training": {"seed": cfg.seed, "network": spec["net"]},
        # the measured difference depends on the CPU (see check_onnx): it goes to MLflow only
        "export_check": {"test_samples": n_test, "atol": cfg.export.atol},
    }


def export(cfg: Config) -> dict[str, Any]:
    """Write `paths.onnx` and `paths.card` and log the run to MLflow; return the card."""
    from mlpipeline import tracking, use_portable_kernels
    from mlpipeline.nets import load_model
    from mlpipeline.plots import render_plots
    from mlpipeline.prepare import load_prepared
    from mlpipeline.train import history_path

    use_portable_kernels(cfg.cpu_threads)
    network, spec = load_model(cfg.paths.model)
    meta = read_json(cfg.paths.prepared / "meta.json")
    x, _ = load_prepared(cfg.paths.prepared, "test")
    metrics_path = cfg.paths.reports / "metrics.json"
    if not metrics_path.is_file():
        raise PipelineError(f"{metrics_path} not found: run the evaluate stage first")
    metrics = read_json(metrics_path)

    with (
        atomic_path(cfg.paths.onnx) as onnx_tmp,
        atomic_path(cfg.paths.card) as card_tmp,
        atomic_path(cfg.paths.reference) as reference_tmp,
        tempfile.TemporaryDirectory() as scratch,
    ):
        to_onnx(network, x[:2], onnx_tmp, cfg.export.opset)
        diff, reference = check_onnx(onnx_tmp, network, x, cfg.export.atol)
        with open(reference_tmp, "wb") as handle:
            np.save(handle, reference, allow_pickle=False)
        card = model_card(cfg, spec, meta, md5_file(onnx_tmp), metrics, len(x))
        card_tmp.write_text(json_text(card), encoding="utf-8")

        with open(history_path(cfg), newline="") as handle:
            history = list(csv.DictReader(handle))
        root = tracking.repo_root()
        git = tracking.git_state(root)
        logged = tracking.log_pipeline_run(
            uri=cfg.tracking.uri,
            experiment=cfg.tracking.experiment,
            registered_model=cfg.tracking.registered_model,
            params=cfg.model_dump(mode="json", by_alias=True),
            history=history,
            metrics=metrics,
            tags={
                "git_commit": git["commit"],
                "git_dirty": str(git["dirty"]),
                "data_md5": card["hashes"]["data"],
                "model_md5": card["hashes"]["model"],
                "onnx_md5": card["hashes"]["onnx"],
                **({"dvc_exp_name": name} if (name := os.environ.get("DVC_EXP_NAME")) else {}),
            },
            onnx_path=onnx_tmp,
            card=card
            | {
                "git_commit": git["commit"],
                "export_check": card["export_check"] | {"max_abs_diff": diff},
            },
            artifacts=[metrics_path, *render_plots(cfg.paths.reports, Path(scratch))],
            input_example=x[:2],
        )
    print(
        f"exported {cfg.paths.onnx} (max |Δp| vs PyTorch {diff:.1e}) and {cfg.paths.card}; "
        f"MLflow run {logged['run_id']}, {cfg.tracking.registered_model} "
        f"version {logged['model_version']} at {tracking.tracking_uri(cfg.tracking.uri)}"
    )
    return card


if __name__ == "__main__":
    run_stage(export)
