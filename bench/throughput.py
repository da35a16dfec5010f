"""Training throughput: the train stage itself against a plain PyTorch loop.

The stage is `mlpipeline.train.train` as `dvc repro` runs it (its Lightning module, callbacks,
progress bar, validation, checkpointing and early stopping), timed by one more callback over
each epoch's training batches: from the epoch's start to its last batch's end, so validation
is left out. The plain loop trains the same network (built from params.yaml's spec) on the same
DataLoader (ArrayDataModule.train_dataloader()) with the same optimizer, batch size, CPU
threads and kernels (mlpipeline.use_portable_kernels), with deterministic algorithms on: forward,
cross-entropy, zero_grad, backward, step. Lightning's floor is a module whose training step does
only that, in a Trainer without callbacks. The first epoch of each run is a warm-up, not counted.

Usage: python bench/throughput.py REPO [--epochs N] [--rounds R]
REPO is a repository copy whose data/prepared exists (bench/pipeline.py passes its temp copy).
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from quiet import repeat_quietly

from mlpipeline import use_portable_kernels
from mlpipeline.config import Config, load_config
from mlpipeline.datamodule import ArrayDataModule
from mlpipeline.model import Classifier
from mlpipeline.nets import build_network
from mlpipeline.train import MODULE_TRAINER_ARGS, train

Times = dict[str, list[float]]  # per epoch: wall and CPU seconds


def make_data(cfg: Config) -> ArrayDataModule:
    data = ArrayDataModule(
        cfg.paths.prepared, cfg.data.batch_size, cfg.data.num_workers, seed=cfg.seed
    )
    data.setup("fit")
    return data


def make_network(cfg: Config, data: ArrayDataModule) -> torch.nn.Module:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return build_network(
        {
            "net": cfg.model.spec(),
            "in_shape": data.meta["input_shape"],
            "num_classes": len(data.meta["classes"]),
            "normalization": data.meta["normalization"],
        }
    )


def plain_epochs(cfg: Config, epochs: int) -> Times:
    """Per epoch of forward, cross-entropy, zero_grad, backward, optimizer step."""
    use_portable_kernels(cfg.cpu_threads)
    data = make_data(cfg)
    network = make_network(cfg, data).train()
    optimizer = instantiate(cfg.optimizer.spec(), params=network.parameters())
    torch.use_deterministic_algorithms(True)  # as Lightning's deterministic=True does
    loader = data.train_dataloader()
    times: Times = {"wall": [], "cpu": []}
    for _ in range(epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        for x, y in loader:
            loss = F.cross_entropy(network(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times["wall"].append(time.perf_counter() - wall)
        times["cpu"].append(time.process_time() - cpu)
    return times


class TrainingTimer(L.Callback):
    """Wall and CPU seconds of each epoch's training batches (validation comes after them)."""

    def __init__(self) -> None:
        self.times: Times = {"wall": [], "cpu": []}

    def on_train_epoch_start(self, *_: Any) -> None:
        self.start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, *_: Any) -> None:
        self.end = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, *_: Any) -> None:
        self.times["wall"].append(self.end[0] - self.start[0])
        self.times["cpu"].append(self.end[1] - self.start[1])


def stage_epochs(cfg: Config, epochs: int, out: Path) -> Times:
    """The train stage's own run, writing its model and history under `out`."""
    paths = cfg.paths.model_copy(update={"model": out / "model.pt", "reports": out / "reports"})
    trainer = cfg.trainer.model_copy(update={"max_epochs": epochs})
    timer = TrainingTimer()
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        contextlib.redirect_stderr(null),
    ):
        train(cfg.model_copy(update={"paths": paths, "trainer": trainer}), callbacks=[timer])
    return timer.times


class FloorClassifier(Classifier):
    """Lightning's floor: the stage's module with nothing but the plain loop's work per step."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


def floor_epochs(cfg: Config, epochs: int) -> Times:
    """Trainer.fit of FloorClassifier with conf/trainer settings, no callbacks, no bar."""
    use_portable_kernels(cfg.cpu_threads)
    data = make_data(cfg)
    module = FloorClassifier(
        make_network(cfg, data), len(data.meta["classes"]), cfg.optimizer.spec(), None
    )
    timer = TrainingTimer()
    settings = {k: v for k, v in cfg.trainer.spec().items() if k not in MODULE_TRAINER_ARGS}
    trainer = instantiate(
        settings,
        accelerator="cpu",  # the plain loop runs on the CPU too
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    return timer.times


def samples_per_second(times: list[float], samples: int) -> float:
    """From the median epoch after the first (a warm-up)."""
    return samples / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per run")
    parser.add_argument("--rounds", type=int, default=3, help="quiet rounds (one run per loop)")
    args = parser.parse_args()
    os.chdir(args.repo)  # params.yaml paths are relative to the repository root
    warnings.filterwarnings("ignore", message=".*treespec.*deprecated")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    cfg = load_config("params.yaml")
    samples = len(make_data(cfg).data["train"])
    # the stage may stop early: give it room for the timed epochs plus early stopping's slack
    epochs = args.epochs + 1

    def one_round() -> dict[str, dict[str, float]]:
        # the three runs go back to back so that they share the machine's conditions
        with tempfile.TemporaryDirectory() as out:
            times = {
                "plain": plain_epochs(cfg, epochs),
                "lightning_floor": floor_epochs(cfg, epochs),
                "stage": stage_epochs(cfg, epochs, Path(out)),
            }
        return {
            key: {kind: samples_per_second(t[kind], samples) for kind in ("wall", "cpu")}
            for key, t in times.items()
        }

    rounds, quiet = repeat_quietly(one_round, args.rounds, tries=2 * args.rounds)
    info = {
        "samples_per_epoch": samples,
        "batch_size": cfg.data.batch_size,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "rounds": rounds,  # samples/s per loop, from wall and from CPU time
        "quiet": quiet,
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
