"""Stage `train`: fit the configured network with Lightning; write the model and epoch history.

Seeded and deterministic: two runs on the same CPU write byte-identical model files. Lightning
checkpoints (which hold paths and loop state) live in a temporary directory; the best weights
are copied into the self-describing model file that later stages read.
"""

from __future__ import annotations

import csv
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipeline.cli import run_stage
from mlpipeline.config import Config, check_targets

# Trainer settings that the module applies itself, as it optimizes manually
MODULE_TRAINER_ARGS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr")


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    history: list[dict[str, float]]
    best_score: float
    epochs: int
    global_zero: bool = True  # False in the other processes of a DDP run


def history_path(cfg: Config) -> Path:
    return cfg.paths.reports / "train" / "history.csv"


def train(cfg: Config, callbacks: list[Any] | None = None) -> TrainResult:
    """Train from the prepared data; write `paths.model` and reports/train/history.csv."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from mlpipeline import use_portable_kernels
    from mlpipeline.artifacts import atomic_path
    from mlpipeline.datamodule import ArrayDataModule
    from mlpipeline.model import Classifier
    from mlpipeline.nets import build_network, save_model

    check_targets(cfg)
    use_portable_kernels(cfg.cpu_threads)
    # Lightning 2.6 on torch 2.13 warns about its own use of torch's pytree API
    warnings.filterwarnings("ignore", message=".*treespec.*deprecated")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = ArrayDataModule(
        cfg.paths.prepared, cfg.data.batch_size, cfg.data.num_workers, seed=cfg.seed
    )
    spec = {
        "net": cfg.model.spec(),
        "in_shape": data.meta["input_shape"],
        "num_classes": len(data.meta["classes"]),
        "normalization": data.meta["normalization"],
    }
    network = build_network(spec)
    trainer_args = cfg.trainer.spec()
    module = Classifier(
        network,
        spec["num_classes"],
        cfg.optimizer.spec(),
        cfg.scheduler.spec() if cfg.scheduler else None,
        # the module optimizes manually, so it clips and accumulates (mlpipeline.model)
        **{k: trainer_args.pop(k) for k in MODULE_TRAINER_ARGS if k in trainer_args},
    )
    with tempfile.TemporaryDirectory(prefix="ckpt-") as ckpt_dir:
        checkpoint = instantiate(
            cfg.callbacks.model_checkpoint.spec(), dirpath=ckpt_dir, filename="best"
        )
        extra = [
            instantiate(section.spec())
            for section in (cfg.callbacks.early_stopping, cfg.callbacks.progress_bar)
            if section
        ]
        trainer = instantiate(
            trainer_args,
            profiler=trainer_args.pop("profiler", None) or null_profiler(),
            callbacks=[checkpoint, *extra, *(callbacks or [])],
            logger=False,
            default_root_dir=ckpt_dir,
            enable_checkpointing=True,
        )
        trainer.fit(module, datamodule=data)
        # debug presets (fast_dev_run, overfit_batches) save no checkpoint: keep the last weights.
        # Only rank 0 writes the model, and the checkpoint lives in rank 0's temporary directory
        # (Lightning broadcasts its path), gone once rank 0 leaves this block: other ranks skip.
        if checkpoint.best_model_path and trainer.is_global_zero:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
            module.load_state_dict(best["state_dict"])
        score = checkpoint.best_model_score
        best_score = float(score) if score is not None else float("nan")

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Lightning leaves the DDP process group up; the next fit in this process (the next
        # sweep trial) would reuse it with peers that have exited
        torch.distributed.destroy_process_group()
    history = [{k: row[k] for k in HISTORY_COLUMNS if k in row} for row in module.history]
    if trainer.is_global_zero:
        save_model(cfg.paths.model, spec, module.network)
        with atomic_path(history_path(cfg)) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: _fmt(v) for k, v in row.items()} for row in history)
        print(
            f"trained {len(history)} epochs; best {checkpoint.monitor} = {best_score:.4f} "
            f"-> {cfg.paths.model} (first training step "
            f"{module.first_step_at - process_start_time():.1f} s after process start)"
        )
    return TrainResult(cfg.paths.model, history, best_score, len(history), trainer.is_global_zero)


def process_start_time() -> float:
    """When this process started, in `time.time()` seconds. On Linux from its start tick and
    the boot clock (exact to 10 ms): psutil's `create_time` adds the boot time that Linux
    reports in whole seconds, which put it up to 1 s early (0.97 s on one machine here)."""
    import os
    import time

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def null_profiler() -> Any:
    """Lightning's default profiler, which records nothing, without its cost: it wraps each of
    the ~40 hook calls of a training step in a fresh generator-based context manager, 2 to 3 %
    of this small network's step; this one hands out a single null context. `trainer.profiler`
    (e.g. `debug=profiler`) replaces it."""
    import contextlib

    from lightning.pytorch.profilers import PassThroughProfiler

    null = contextlib.nullcontext()

    class NullProfiler(PassThroughProfiler):
        def profile(self, action_name: str) -> contextlib.AbstractContextManager:
            return null

    return NullProfiler()


def _fmt(value: float) -> str | int:
    return value if isinstance(value, int) else f"{value:.6g}"


if __name__ == "__main__":
    run_stage(train)
