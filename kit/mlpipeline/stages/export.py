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

from mlpipeline.artifacts import atomic_path, json_text, load_array, md5_dir, md5_file, read_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.splits import read_meta, read_split, split_table
from mlpipeline.errors import PipelineError

INPUT, OUTPUT = "input", "probabilities"  # images: the input tensor; classes: the output
PREDICTION = "prediction"  # the output of a regression
FEATURES = "features"  # the network's input inside a table model, after the preprocessing
CHECK_ROWS = 65_536  # test rows run through ONNX Runtime at a time


def output_name(task: str) -> str:
    return PREDICTION if task == "regression" else OUTPUT


def to_onnx(
    network: Any,
    example: np.ndarray,
    path: Path,
    opset: int,
    task: str = "classification",
    input_name: str = INPUT,
) -> None:
    """Export the network with a dynamic batch axis: softmax probabilities for a
    classification, the value for a regression (TorchScript-based exporter: deterministic
    bytes and no extra dependencies)."""
    import torch

    head = torch.nn.Flatten(start_dim=0) if task == "regression" else torch.nn.Softmax(dim=1)
    wrapped = torch.nn.Sequential(network, head).eval()
    output = output_name(task)
    with warnings.catch_warnings():
        # the legacy exporter is chosen on purpose (see above); its deprecation notice is noise
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped,
            (torch.from_numpy(example),),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=[output],
            dynamic_axes={input_name: {0: "batch"}, output: {0: "batch"}},
            opset_version=opset,
        )


def with_preprocessing(preprocess: Path, network: Path, out: Path) -> None:
    """One ONNX model: the fitted preprocessing (raw columns in, features out) feeding the
    network (onnx.compose); its inputs are the raw columns, its output the network's."""
    import onnx
    from onnx import compose

    prep, net = onnx.load(str(preprocess)), onnx.load(str(network))
    net = compose.add_prefix(net, "network/", rename_inputs=False, rename_outputs=False)
    version = max(prep.ir_version, net.ir_version)
    prep.ir_version = net.ir_version = version
    merged = compose.merge_models(prep, net, io_map=[(FEATURES, FEATURES)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))


def compare(
    onnx_out: np.ndarray, torch_out: np.ndarray, task: str, atol: float, rtol: float
) -> tuple[float, int, int]:
    """The largest difference, how many values differ beyond atol + rtol * |torch|, and how
    many rows disagree on the class (classification)."""
    diff = np.abs(onnx_out - torch_out)
    largest = float(diff.max()) if len(diff) else 0.0
    beyond = int((diff > atol + rtol * np.abs(torch_out)).sum())
    if task == "regression":
        return largest, beyond, 0
    return largest, beyond, int((onnx_out.argmax(1) != torch_out.argmax(1)).sum())


def check_onnx(
    path: Path,
    network: Any,
    x: np.ndarray,
    atol: float,
    rtol: float = 0.0,
    task: str = "classification",
    feeds: Any = None,
) -> tuple[float, np.ndarray]:
    """Compare ONNX Runtime with PyTorch; return the largest difference and PyTorch's outputs,
    the reference outputs for the serving checks (ONNX Runtime picks its kernels by CPU and
    cannot be pinned, so its last bits vary between machines). `x` is what the network takes;
    `feeds` (a table model) yields the ONNX model's inputs for the same rows, in batches."""
    import onnxruntime as ort

    from mlpipeline.models.modelfile import predict

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = output_name(task)
    batches = (
        feeds
        if feeds is not None
        else ({INPUT: x[i : i + CHECK_ROWS]} for i in range(0, len(x), CHECK_ROWS))
    )
    onnx_out = np.concatenate([session.run([output], batch)[0] for batch in batches])
    torch_out = predict(network, x, task).numpy()
    diff, beyond, mismatched = compare(onnx_out, torch_out, task, atol, rtol)
    if beyond or mismatched:
        raise PipelineError(
            f"ONNX model disagrees with PyTorch on the test split: {beyond} values beyond "
            f"export.atol {atol:g} + export.rtol {rtol:g} x |value| (max difference "
            f"{diff:.2e}), {mismatched} different predicted classes; try another export.opset "
            "or loosen export.atol / export.rtol"
        )
    return diff, torch_out


def model_card(
    cfg: Config,
    spec: dict[str, Any],
    meta: dict[str, Any],
    onnx_md5: str,
    metrics: dict[str, Any],
    n_test: int,
) -> dict[str, Any]:
    """Everything a consumer of the ONNX file needs, and where it came from."""
    table = meta.get("kind") == "table"
    if table:
        model_input: dict[str, Any] = {
            "kind": "records",
            "columns": meta["columns"],
            "note": "send raw columns by name; missing keys and nulls are missing values",
        }
    else:
        model_input = {
            "kind": "tensor",
            "name": INPUT,
            "dtype": "float32",
            "shape": [None, *meta["input_shape"]],
        }
    classes = meta["classes"]
    shape = [None] if cfg.task == "regression" else [None, len(classes)]
    return {
        "name": cfg.tracking.registered_model,
        "version": onnx_md5[:12],
        "format": "onnx",
        "opset": cfg.export.opset,
        "task": cfg.task,
        "input": model_input,
        "output": {"name": output_name(cfg.task), "dtype": "float32", "shape": shape},
        "classes": classes,
        "preprocessing": {
            "applied_inside_model": True,
            "note": "the fitted preprocessing (features/schema.json) runs inside the model"
            if table
            else "send raw pixels; the model subtracts mean and divides by std itself",
            **({} if table else {"normalization": meta["normalization"]}),
        },
        "metrics": metrics,
        "hashes": {
            "data": md5_dir(cfg.paths.features),
            "model": md5_file(cfg.paths.model),
            "onnx": onnx_md5,
        },
        "training": {"seed": cfg.seed, "network": spec["net"]},
        # the measured difference depends on the CPU (see check_onnx): it goes to MLflow only
        "export_check": {
            "test_samples": n_test,
            "atol": cfg.export.atol,
            "rtol": cfg.export.rtol,
        },
    }


def export(cfg: Config) -> dict[str, Any]:
    """Write `paths.onnx`, `paths.card` and `paths.reference`; return the card. A table's
    model also runs the preprocessing, and is checked on the raw test rows and on rows with
    missing values and unseen categories (features/probes.json)."""
    from mlpipeline.determinism import use_portable_kernels
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    network, spec = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, _ = read_split(cfg.paths.features, "test", mmap=True)
    if not cfg.paths.metrics.is_file():
        raise PipelineError(f"{cfg.paths.metrics} not found: run the evaluate stage first")
    metrics = read_json(cfg.paths.metrics)
    table = meta.get("kind") == "table"

    with (
        atomic_path(cfg.paths.onnx) as onnx_tmp,
        atomic_path(cfg.paths.card) as card_tmp,
        atomic_path(cfg.paths.reference) as reference_tmp,
    ):
        if table:
            network_onnx = onnx_tmp.with_name("network.onnx")
            to_onnx(network, np.asarray(x[:2]), network_onnx, cfg.export.opset, cfg.task, FEATURES)
            with_preprocessing(cfg.paths.features / "preprocess.onnx", network_onnx, onnx_tmp)
            network_onnx.unlink()
            diff, reference = _check_table(cfg, onnx_tmp, network, x, meta)
        else:
            to_onnx(network, x[:2], onnx_tmp, cfg.export.opset)
            diff, reference = check_onnx(onnx_tmp, network, x, cfg.export.atol, cfg.export.rtol)
        with open(reference_tmp, "wb") as handle:
            np.save(handle, reference, allow_pickle=False)
        card = model_card(cfg, spec, meta, md5_file(onnx_tmp), metrics, len(x))
        card_tmp.write_text(json_text(card), encoding="utf-8")
    print(
        f"exported {cfg.paths.onnx} (max difference from PyTorch {diff:.1e} on {len(x)} test "
        f"rows{' and the probes' if table else ''}), {cfg.paths.card} and {cfg.paths.reference}"
    )
    return card


def _check_table(
    cfg: Config, path: Path, network: Any, x: np.ndarray, meta: dict[str, Any]
) -> tuple[float, np.ndarray]:
    """The table model against PyTorch on the raw test rows, then on the probe rows."""
    from mlpipeline.data.features import onnx_feeds

    columns = meta["columns"]
    parquet = split_table(cfg.paths.prepared, "test")
    names = [c["name"] for c in columns]
    feeds = (
        onnx_feeds(b, columns) for b in parquet.iter_batches(batch_size=CHECK_ROWS, columns=names)
    )
    tolerance = (cfg.export.atol, cfg.export.rtol, cfg.task)
    diff, reference = check_onnx(path, network, x, *tolerance, feeds)
    probes = read_json(cfg.paths.features / "probes.json")
    probe_x = load_array(cfg.paths.features / "probes.npy")
    probe_diff, _ = check_onnx(path, network, probe_x, *tolerance, [onnx_feeds(probes, columns)])
    return max(diff, probe_diff), reference


if __name__ == "__main__":
    run_stage(export)
