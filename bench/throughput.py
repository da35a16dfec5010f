"""Training throughput: the train stage's Lightning setup against a plain PyTorch loop.

Both sides train the same network (built from params.yaml's spec) on the same DataLoader
(ArrayDataModule.train_dataloader()) with the same optimizer and batch size, on the CPU, with
deterministic algorithms on. Only training epochs are timed (no validation on either side);
the first epoch of each run is a warm-up and is not counted.

Usage: python bench/throughput.py REPO [--epochs N] [--rounds R]
REPO is a repository copy whose data/prepared exists (bench/pipeline.py passes its temp copy).
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from quiet import repeat_quietly

from mlpipeline.config import Config, load_config
from mlpipeline.datamodule import ArrayDataModule
from mlpipeline.model import Classifier
from mlpipeline.nets import build_network


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


def plain_epochs(cfg: Config, epochs: int) -> list[float]:
    """Seconds per epoch of forward, cross-entropy, backward, optimizer step."""
    data = make_data(cfg)
    network = make_network(cfg, data).train()
    optimizer = instantiate(cfg.optimizer.spec(), params=network.parameters())
    torch.use_deterministic_algorithms(True)  # as Lightning's deterministic=True does
    loader = data.train_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(network(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, *_: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, *_: Any) -> None:
        self.times.append(time.perf_counter() - self.start)


class BareClassifier(Classifier):
    """Lightning's floor: the same module with nothing but the loss in its training step."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)


def lightning_epochs(
    cfg: Config, epochs: int, progress_bar: bool, module_cls: type[Classifier] = Classifier
) -> list[float]:
    """Seconds per epoch of Trainer.fit with the real Classifier and conf/trainer settings;
    `progress_bar` adds the train stage's progress bar (conf/callbacks)."""
    data = make_data(cfg)
    num_classes = len(data.meta["classes"])
    module = module_cls(
        make_network(cfg, data),
        num_classes,
        cfg.optimizer.spec(),
        cfg.scheduler.spec() if cfg.scheduler else None,
    )
    timer = EpochTimer()
    bar = cfg.callbacks.progress_bar
    extra = [instantiate(bar.spec())] if progress_bar and bar else []
    trainer = instantiate(
        cfg.trainer.spec(),
        accelerator="cpu",  # the plain loop runs on the CPU too
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[timer, *extra],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    return timer.times


def samples_per_second(times: list[float], samples: int) -> float:
    timed = times[1:]  # the first epoch is a warm-up
    return samples * len(timed) / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per run")
    parser.add_argument("--rounds", type=int, default=3, help="quiet rounds (one run per loop)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(args.repo)  # params.yaml paths are relative to the repository root
    warnings.filterwarnings("ignore", message=".*treespec.*deprecated")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    cfg = load_config("params.yaml")
    samples = len(make_data(cfg).data["train"])

    def one_round() -> dict[str, float]:
        # the three runs go back to back so that they share the machine's conditions
        times = {
            "plain": plain_epochs(cfg, args.epochs + 1),
            "lightning_bare": lightning_epochs(
                cfg, args.epochs + 1, progress_bar=False, module_cls=BareClassifier
            ),
            "lightning": lightning_epochs(cfg, args.epochs + 1, progress_bar=False),
            "lightning_progress_bar": lightning_epochs(cfg, args.epochs + 1, progress_bar=True),
        }
        return {key: samples_per_second(t, samples) for key, t in times.items()}

    rounds, quiet = repeat_quietly(one_round, args.rounds, tries=2 * args.rounds)
    info = {
        "samples_per_epoch": samples,
        "batch_size": cfg.data.batch_size,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "rounds": rounds,  # samples/s per loop
        "quiet": quiet,
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
