"""Stage `export`: ONNX model with a dynamic batch axis, checked against PyTorch, a model card,
and PyTorch's outputs on the test split as the reference for the serving checks.

The check runs both models on the whole test split: every output must stay within
export.atol times the task's output scale (1 for probabilities, the training target's standard
deviation for a regression) plus export.rtol times its value, and every predicted class must
agree, else nothing is written.
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
from mlpipeline.config.tasks import Classification, Regression, task_for
from mlpipeline.data.sources import Digits, TableFile, source_for
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.determinism import use_portable_kernels
from mlpipeline.errors import PipelineError

INPUT = Digits.network_input  # an image model's input tensor
OUTPUT, PREDICTION = Classification.output, Regression.output  # the outputs, by task
FEATURES = TableFile.network_input  # the network's input inside a table model
CHECK_ROWS = 65_536  # test rows run through ONNX Runtime at a time


def output_name(task: str) -> str:
    """The exported model's output name for `task`."""
    return task_for(task).output


def to_onnx(
    network: Any,
    example: np.ndarray,
    path: Path,
    opset: int,
    task: str = Classification.name,
    input_name: str = INPUT,
) -> None:
    """Export the network with a dynamic batch axis and the task's head (softmax
    probabilities, or the value; TorchScript-based exporter: deterministic bytes and no extra
    dependencies)."""
    # torch takes seconds to import: the stage checks its config (and answers --help) first
    import torch

    kind = task_for(task)
    wrapped = torch.nn.Sequential(network, kind.head()).eval()
    output = kind.output
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


def check_onnx(
    path: Path,
    network: Any,
    x: np.ndarray,
    atol: float,
    rtol: float = 0.0,
    task: str = Classification.name,
    feeds: Any = None,
    meta: dict[str, Any] | None = None,
    case: str = "test split",
) -> tuple[float, np.ndarray]:
    """Compare ONNX Runtime with PyTorch; return the largest difference and PyTorch's outputs,
    the reference outputs for the serving checks (ONNX Runtime picks its kernels by CPU and
    cannot be pinned, so its last bits vary between machines). `x` is what the network takes;
    `feeds` yields the ONNX model's inputs for the same rows, in batches (default: `x` as an
    image model's input). `atol` is a fraction of the task's output scale, which `meta`
    (features/meta.json) gives; `case` names the rows in the message."""
    # ONNX Runtime's import is not free either: the config check (and --help) come first
    import onnxruntime as ort

    kind = task_for(task)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = (
        feeds
        if feeds is not None
        else ({INPUT: x[i : i + CHECK_ROWS]} for i in range(0, len(x), CHECK_ROWS))
    )
    onnx_out = np.concatenate([session.run([kind.output], batch)[0] for batch in batches])
    torch_out = kind.predict(network, x).numpy()
    scale = kind.output_scale(meta or {})
    compared = kind.compare(onnx_out, torch_out, atol * scale, rtol)
    if compared[1] or compared[2]:
        raise PipelineError(kind.disagreement(case, compared, atol, rtol, scale))
    return compared[0], torch_out


def model_card(
    cfg: Config,
    spec: dict[str, Any],
    meta: dict[str, Any],
    onnx_md5: str,
    metrics: dict[str, Any],
    n_test: int,
) -> dict[str, Any]:
    """Everything a consumer of the ONNX file needs, and where it came from."""
    source, task = source_for(cfg), task_for(cfg.task)
    classes = meta["classes"]
    return {
        "name": cfg.tracking.registered_model,
        "version": onnx_md5[:12],
        "format": "onnx",
        "opset": cfg.export.opset,
        "task": cfg.task,
        "input": source.model_input(meta),
        "output": {"name": task.output, "dtype": "float32", "shape": task.output_shape(classes)},
        "classes": classes,
        "preprocessing": source.preprocessing(meta),
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
    """Write `paths.onnx`, `paths.card` and `paths.reference`; return the card. The data
    source's kind completes the model (a table's preprocessing in front) and names the rows it
    is checked on (a table's also with missing values and unseen categories)."""
    # it imports torch, seconds that the stage's config check (and --help) should not wait for
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    source = source_for(cfg)
    network, spec = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, _ = read_split(cfg.paths.features, "test", mmap=True)
    if not cfg.paths.metrics.is_file():
        raise PipelineError(f"{cfg.paths.metrics} not found: run the evaluate stage first")
    metrics = read_json(cfg.paths.metrics)

    with (
        atomic_path(cfg.paths.onnx) as onnx_tmp,
        atomic_path(cfg.paths.card) as card_tmp,
        atomic_path(cfg.paths.reference) as reference_tmp,
    ):
        network_onnx = onnx_tmp.with_name("network.onnx")
        example = np.asarray(x[:2])
        to_onnx(network, example, network_onnx, cfg.export.opset, cfg.task, source.network_input)
        source.finish_onnx(network_onnx, onnx_tmp, cfg.paths.features)
        checks = source.export_checks(cfg, meta, x, CHECK_ROWS)
        tolerance = (cfg.export.atol, cfg.export.rtol, cfg.task)
        diffs = [
            check_onnx(onnx_tmp, network, cx, *tolerance, feeds, meta, case)
            for case, cx, feeds in checks
        ]
        diff, reference = max(d for d, _ in diffs), diffs[0][1]
        with open(reference_tmp, "wb") as handle:
            np.save(handle, reference, allow_pickle=False)
        card = model_card(cfg, spec, meta, md5_file(onnx_tmp), metrics, len(x))
        card_tmp.write_text(json_text(card), encoding="utf-8")
    also = "".join(f" and the {name}" for name, _, _ in checks[1:])
    print(
        f"exported {cfg.paths.onnx} (max difference from PyTorch {diff:.1e} on {len(x)} test "
        f"rows{also}), {cfg.paths.card} and {cfg.paths.reference}"
    )
    return card


if __name__ == "__main__":
    run_stage(export)
