"""Training with Lightning, from the resolved config and the prepared data: the logic of the
train stage and of every sweep trial.

Seeded and deterministic: two runs on the same CPU write byte-identical model files. Lightning
checkpoints (which hold paths and loop state) live in a scratch directory beside the model file,
which the next run deletes if this one is killed; the best weights go into the self-describing
model file (`mlpipeline.models.modelfile`) that later stages read.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException

from mlpipeline.artifacts import scratch_dir, write_csv
from mlpipeline.config import Config, check_targets, instantiate
from mlpipeline.config.targets import MODULE_INPUTS
from mlpipeline.config.tasks import task_for
from mlpipeline.data.datamodule import ArrayDataModule, augmentation
from mlpipeline.data.splits import read_split
from mlpipeline.determinism import use_portable_kernels
from mlpipeline.errors import PipelineError
from mlpipeline.models.history import EpochHistory
from mlpipeline.models.modelfile import build_network, save_model

# both tasks' columns, so that every plot dvc.yaml defines finds its fields (the other task's
# stay empty)
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_f1",
    "val_mae",
    "val_rmse",
    "val_r2",
    "lr",
)


@dataclass(frozen=True)
class TrainResult:
    network: Any  # the trained torch module, best checkpoint's weights
    spec: dict[str, Any]  # what rebuilds it (mlpipeline.models.modelfile)
    history: list[dict[str, float]]
    monitor: str
    best_score: float
    global_zero: bool = True  # False in the other processes of a DDP run
    device: str = "cpu"  # what trained it: "cpu", "cuda", or "2 cpu processes" under DDP

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def parameters(self) -> int:
        """The network's trainable parameters (the train stage's line says how many)."""
        return sum(p.numel() for p in self.network.parameters() if p.requires_grad)


def fit(cfg: Config, callbacks: list[Any] | None = None, splits: Any = None) -> TrainResult:
    """Train the configured network on `cfg.paths.features` (or on `splits`, arrays by split
    name); `callbacks` are added to the configured ones (benchmarks pass their timers here)."""

    check_targets(cfg)
    use_portable_kernels(cfg.cpu_threads)
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = ArrayDataModule(
        cfg.paths.features,
        cfg.data.batch_size,
        cfg.data.num_workers,
        seed=cfg.seed,
        splits=splits,
        augment=augmentation([step.spec() for step in cfg.data.augment]),
    )
    dtype = data.meta.get("input_dtype", "float32")
    spec = {
        "net": cfg.model.spec(),
        "in_shape": data.meta["input_shape"],
        # the network's outputs: a score per class, or the one predicted value
        "num_classes": task_for(cfg.task).output_size(data.meta.get("classes")),
        "normalization": data.meta["normalization"],
        # images arrive as uint8 and the network casts them; left out for float32 inputs, so
        # their model files stay as they were
        **({"input_dtype": dtype} if dtype != "float32" else {}),
        # a regression's target scaling, which the model's last layer undoes
        **({"target": data.meta["target"]} if data.meta.get("target") else {}),
    }
    network = build_network(spec)
    inputs = {
        "network": network,
        "num_classes": spec["num_classes"],
        "optimizer": cfg.optimizer.spec(),
        "scheduler": cfg.scheduler.spec() if cfg.scheduler else None,
        "loss": cfg.objective,
        "target": spec.get("target"),
    }
    module = instantiate(
        cfg.module.spec(),
        "module",
        # the optimizer and scheduler specs arrive as plain dicts, not yet built
        _recursive_=False,
        _convert_="all",
        **{name: inputs[name] for name in MODULE_INPUTS[cfg.task]},
    )
    trainer_args = cfg.trainer.spec()
    # progress bars on a terminal; in a file or a CI log one line per epoch instead
    terminal = sys.stderr.isatty()
    history = EpochHistory(HISTORY_COLUMNS, trainer_args["max_epochs"], echo=not terminal)
    # beside the model, not in the system's temporary directory: a killed run's checkpoints
    # are then the next run's to delete (mlpipeline.artifacts.scratch_dir)
    checkpoints = cfg.paths.model.with_name(f"{cfg.paths.model.name}.checkpoints")
    with scratch_dir(checkpoints) as ckpt_dir:
        checkpoint = instantiate(
            cfg.callbacks.model_checkpoint.spec(),
            "callbacks.model_checkpoint",
            dirpath=str(ckpt_dir),
            filename="best",
        )
        configured = {"early_stopping": cfg.callbacks.early_stopping, **cfg.callbacks.extra()}
        if terminal:
            configured["progress_bar"] = cfg.callbacks.progress_bar
        else:
            trainer_args.setdefault("enable_progress_bar", False)
        trainer = instantiate(
            trainer_args,
            "trainer",
            callbacks=[
                checkpoint,
                history,
                *(
                    instantiate(section.spec(), f"callbacks.{name}")
                    for name, section in configured.items()
                    if section is not None
                ),
                *(callbacks or []),
            ],
            logger=False,
            default_root_dir=str(ckpt_dir),
            enable_checkpointing=True,
        )
        try:
            trainer.fit(module, datamodule=data)
        except InstantiationException as err:
            # the module builds its optimizer and scheduler from their specs inside fit: a value
            # their class refuses (a negative weight decay) is a config error, said in one line
            raise PipelineError(
                f"optimizer or scheduler: {' '.join(str(err).split())}; fix it in conf/ or the "
                "override"
            ) from None
        # debug presets (fast_dev_run, overfit_batches) save no checkpoint: keep the last weights.
        # Only rank 0 reads the best checkpoint: it lives in rank 0's temporary directory
        # (Lightning broadcasts its path), gone once rank 0 leaves this block.
        if checkpoint.best_model_path and trainer.is_global_zero:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
            module.load_state_dict(best["state_dict"])
        score = checkpoint.best_model_score
        best_score = float(score) if score is not None else float("nan")
        device = trainer.strategy.root_device.type
        if trainer.world_size > 1:
            device = f"{trainer.world_size} {device} processes"

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Lightning leaves the DDP process group up; the next fit in this process (the next
        # sweep trial) would reuse it with peers that have exited
        torch.distributed.destroy_process_group()
    # the module trained the network it was given, whatever it calls it
    return TrainResult(
        network, spec, history.rows, checkpoint.monitor, best_score, trainer.is_global_zero, device
    )


def best_value(history: list[dict[str, float]], metric: str, direction: str) -> float:
    """The best epoch's value of `metric` in a training history."""

    values = [row[metric] for row in history if metric in row]
    if not values:
        raise PipelineError(f"sweep.metric {metric} was never logged; pick one the task logs")
    return max(values) if direction == "maximize" else min(values)


def fold_indices(y: Any, folds: int, task: str, seed: int) -> list[tuple[Any, Any]]:
    """(train, validation) row indices of each of `folds` folds: stratified by class for a
    classification, shuffled by seed either way. The validation parts are disjoint and
    together cover every row."""
    # scikit-learn's import takes seconds, and only cross-validation needs it
    from sklearn.model_selection import KFold, StratifiedKFold

    stratified = task_for(task).has_classes
    kind = StratifiedKFold if stratified else KFold
    if stratified and len(y) and (fewest := int(np.bincount(y).min())) < folds:
        raise PipelineError(
            f"cannot make {folds} folds of the training split: a class has only {fewest} rows "
            "there, and stratified folds need one per fold; lower cv.folds"
        )
    splitter = kind(n_splits=folds, shuffle=True, random_state=seed)
    try:
        return list(splitter.split(np.zeros(len(y)), y))
    except ValueError as err:
        raise PipelineError(
            f"cannot make {folds} folds of the training split: {err}; lower cv.folds"
        ) from None


def cross_validate(cfg: Config) -> dict[str, Any]:
    """Train on each K-1 folds of the training split, score on the fold left out: the mean
    and standard deviation of the best `sweep.metric` (the val split plays no part)."""

    x, y = read_split(cfg.paths.features, "train", mmap=True)
    scores = []
    for fit_rows, held_out in fold_indices(y, cfg.cv.folds, cfg.task, cfg.seed):
        splits = {"train": (x[fit_rows], y[fit_rows]), "val": (x[held_out], y[held_out])}
        result = fit(cfg, splits=splits)
        scores.append(best_value(result.history, cfg.sweep.metric, cfg.sweep.direction))
    return {
        "folds": cfg.cv.folds,
        "metric": cfg.sweep.metric,
        "mean": round(float(np.mean(scores)), 6),
        "std": round(float(np.std(scores)), 6),
        "scores": [round(float(s), 6) for s in scores],
    }


def save(result: TrainResult, model_path: Path, history_path: Path) -> None:
    """Write the model file and the epoch history (CSV, for `dvc plots`); rank 0 only."""

    if not result.global_zero:
        return
    save_model(model_path, result.spec, result.network)
    rows = [{k: _fmt(v) for k, v in row.items()} for row in result.history]
    write_csv(history_path, rows, list(HISTORY_COLUMNS))


# Lightning's lines a user can do nothing about, or that the train stage's own line says: its
# advert for a logging service, which accelerators exist ("GPU available: False, used: False",
# TPU, HPU; a GPU left unused still gets Lightning's warning, which says how) and a stop at
# max_epochs.
UNACTIONABLE = re.compile(r"litlogger|^[A-Z]PU available: |^`Trainer.fit` stopped: `max_epochs=")


class _DropUnactionable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not UNACTIONABLE.search(str(record.msg))


def quiet_lightning() -> None:
    """Drop Lightning's UNACTIONABLE info lines and its warning about its own use of a
    deprecated torch API; its warnings about settings stay."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropUnactionable) for f in logger.filters):
            logger.addFilter(_DropUnactionable())
    warnings.filterwarnings("ignore", message=".*treespec.*deprecated")


def _fmt(value: float) -> str | int:
    return value if isinstance(value, int) else f"{value:.6g}"
