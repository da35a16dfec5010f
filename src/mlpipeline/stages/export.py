"""Stage `export`: ONNX model with a dynamic batch axis, checked against PyTorch, a model card,
and PyTorch's outputs on the test split as the reference for the serving checks.

The check runs both models on the whole test split: the largest probability difference must
stay within export.atol and every predicted class must agree, else nothing is written.
The card holds only what the pipeline's inputs determine (so dvc.lock stays reproducible);
the git commit, MLflow run id and registry version go to MLflow (the register stage) and into
the image labels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import atomic_path, json_text, md5_dir, md5_file, read_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.splits import read_meta, read_split
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

    from mlpipeline.models.modelfile import predict_proba

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
    """Write `paths.onnx`, `paths.card` and `paths.reference`; return the card."""
    from mlpipeline.determinism import use_portable_kernels
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    network, spec = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.prepared)
    x, _ = read_split(cfg.paths.prepared, "test")
    if not cfg.paths.metrics.is_file():
        raise PipelineError(f"{cfg.paths.metrics} not found: run the evaluate stage first")
    metrics = read_json(cfg.paths.metrics)

    with (
        atomic_path(cfg.paths.onnx) as onnx_tmp,
        atomic_path(cfg.paths.card) as card_tmp,
        atomic_path(cfg.paths.reference) as reference_tmp,
    ):
        to_onnx(network, x[:2], onnx_tmp, cfg.export.opset)
        diff, reference = check_onnx(onnx_tmp, network, x, cfg.export.atol)
        with open(reference_tmp, "wb") as handle:
            np.save(handle, reference, allow_pickle=False)
        card = model_card(cfg, spec, meta, md5_file(onnx_tmp), metrics, len(x))
        card_tmp.write_text(json_text(card), encoding="utf-8")
    print(
        f"exported {cfg.paths.onnx} (max |Δp| vs PyTorch {diff:.1e} on {len(x)} test rows), "
        f"{cfg.paths.card} and {cfg.paths.reference}"
    )
    return card


if __name__ == "__main__":
    run_stage(export)
