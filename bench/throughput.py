"""Training throughput: the train stage itself against a plain PyTorch loop, epoch by epoch.

The stage is `mlpipeline.stages.train.train` as `dvc repro` runs it (its Lightning module,
callbacks, progress bar, validation, checkpointing and early stopping), timed by one more
callback over each epoch's training batches: from the epoch's start to its last batch's end,
so validation is left out. The plain loop trains the same network (built from params.yaml's
spec) on the same DataLoader (ArrayDataModule.train_dataloader()) with the same optimizer,
batch size, CPU threads and kernels (mlpipeline.determinism), with deterministic algorithms
on: forward, cross-entropy, zero_grad, backward, step. Lightning's floor is a plain module
whose training step does only the forward and the loss (Lightning's automatic optimization does
the rest), in a Trainer without callbacks.

The plain loop runs one epoch of its own just before each Lightning epoch, in the same process
(from that callback, outside the timed window): each ratio compares two epochs measured within
a tenth of a second of each other, so the load of a shared machine's other tenants weighs on
both alike. The first epoch of each run is a warm-up and is not counted.

Usage:
    python bench/throughput.py REPO [--epochs N] [--rounds R]
REPO is a repository copy whose data/features exists (bench/pipeline.py passes its temp
copy); prints one JSON object on the last line of stdout.
    python bench/throughput.py --table [--rows 200000] [--epochs 3] [--rounds 3]
A table: the tabular defaults (`data=tabular`, `model=mlp`, conf/data/tabular.yaml's batch
size) on a synthetic table (bench/synthetic.py, 50 columns, 5 classes) whose features the
ingest, prepare and features stages make in a temporary directory first; writes its section
of docs/performance.md. The goal is this table's: the train stage at least 0.85 of the plain
loop; the digits CNN (the REPO form) is reported without one, as its step is too small to be
more than Lightning's own per-step cost.
    python bench/throughput.py --images [--rows 1024] [--epochs 2] [--rounds 3]
Images: timm's resnet18 (`model=timm`, random weights) on synthetic uint8 64x64 RGB images
written in the features format of an image source, with conf/data/images.yaml's augmentation
(IMAGE_AUGMENT if that file is absent) in 2 loader workers, on the CPU; writes its section of
docs/performance.md. The goal: the train stage at least 0.95 of the plain loop, whose loader
(the same ArrayDataModule) augments alike.
    --smoke (any form): one round of one timed epoch; --table on 2,000 rows, --images on 128.
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
import numpy as np
import smoke
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from quiet import repeat_quietly
from throughput_report import GOAL, report

from mlpipeline.config import Config, compose_config, load_config
from mlpipeline.data.datamodule import ArrayDataModule, augmentation
from mlpipeline.determinism import prepare_process, use_portable_kernels
from mlpipeline.models.modelfile import build_network
from mlpipeline.stages.train import train
from myproject.models.module import configure

ROOT = Path(__file__).resolve().parents[1]
IMAGE_GOAL = 0.95
# the images' augmentation where conf/ has no data=images (its file not yet there)
IMAGE_AUGMENT = (
    "data.augment=[{_target_:torchvision.transforms.v2.RandomResizedCrop,size:[64,64],"
    "scale:[0.6,1.0]},{_target_:torchvision.transforms.v2.RandomHorizontalFlip},"
    "{_target_:torchvision.transforms.v2.ColorJitter,brightness:0.2,contrast:0.2}]"
)


def make_data(cfg: Config) -> ArrayDataModule:
    data = ArrayDataModule(
        cfg.paths.features,
        cfg.data.batch_size,
        cfg.data.num_workers,
        seed=cfg.seed,
        augment=augmentation([step.spec() for step in cfg.data.augment]),
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
            **({"input_dtype": "uint8"} if data.meta.get("input_dtype") == "uint8" else {}),
        }
    )


class PlainLoop:
    """The plain PyTorch loop over the stage's network, data loader and optimizer."""

    def __init__(self, cfg: Config) -> None:
        use_portable_kernels(cfg.cpu_threads)
        torch.use_deterministic_algorithms(True)  # as Lightning's deterministic=True does
        data = make_data(cfg)
        self.network = make_network(cfg, data).train()
        self.optimizer = instantiate(cfg.optimizer.spec(), params=self.network.parameters())
        self.loader = data.train_dataloader()

    def epoch(self) -> float:
        """Seconds of one epoch of forward, cross-entropy, zero_grad, backward, step."""
        start = time.perf_counter()
        for x, y in self.loader:
            loss = F.cross_entropy(self.network(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start


class Paired(L.Callback):
    """Before each Lightning epoch, one plain-loop epoch; then times the Lightning epoch's
    training batches (validation comes after them)."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain_loop = plain
        self.plain: list[float] = []
        self.lightning: list[float] = []

    def on_train_epoch_start(self, *_: Any) -> None:
        self.plain.append(self.plain_loop.epoch())
        self.start = time.perf_counter()

    def on_train_batch_end(self, *_: Any) -> None:
        self.end = time.perf_counter()

    def on_train_epoch_end(self, *_: Any) -> None:
        self.lightning.append(self.end - self.start)


def stage_epochs(cfg: Config, epochs: int, out: Path) -> Paired:
    """The train stage's own run (model and history written under `out`), paired."""
    paths = cfg.paths.model_copy(update={"model": out / "model.pt", "history": out / "h.csv"})
    trainer = cfg.trainer.model_copy(update={"max_epochs": epochs})
    paired = Paired(PlainLoop(cfg))
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        contextlib.redirect_stderr(null),
    ):
        train(cfg.model_copy(update={"paths": paths, "trainer": trainer}), callbacks=[paired])
    return paired


class FloorClassifier(L.LightningModule):
    """Lightning's floor: a plain module doing only the plain loop's work per step."""

    def __init__(self, network: torch.nn.Module, optimizer: dict[str, Any]) -> None:
        super().__init__()
        self.network, self.optimizer_spec = network, optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.network(x), y)

    def configure_optimizers(self) -> Any:
        return configure(self, self.optimizer_spec, None)


def floor_epochs(cfg: Config, epochs: int) -> Paired:
    """Trainer.fit of FloorClassifier with conf/trainer settings, no callbacks, no bar, paired."""
    paired = Paired(PlainLoop(cfg))
    data = make_data(cfg)
    module = FloorClassifier(make_network(cfg, data), cfg.optimizer.spec())
    trainer = instantiate(
        cfg.trainer.spec(),
        accelerator="cpu",  # the plain loop runs on the CPU too
        max_epochs=epochs,
        limit_val_batches=0,
        callbacks=[paired],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    return paired


def summary(paired: Paired, samples: int) -> dict[str, float]:
    """samples/s of the median epoch of each loop and the median of the per-epoch ratios, the
    first epoch (a warm-up) left out."""
    plain, lightning = paired.plain[1:], paired.lightning[1:]
    return {
        "plain": samples / statistics.median(plain),
        "lightning": samples / statistics.median(lightning),
        "ratio": statistics.median(p / q for p, q in zip(plain, lightning, strict=True)),
    }


def measure(cfg: Config, epochs: int, rounds: int) -> dict[str, Any]:
    """`rounds` quiet rounds of the stage and the floor, each paired with the plain loop over
    `epochs` epochs after a warm-up one; what `report` shows."""
    data = make_data(cfg)
    samples = len(data.data["train"])

    def one_round() -> dict[str, dict[str, float]]:
        with tempfile.TemporaryDirectory() as out:
            stage = stage_epochs(cfg, epochs + 1, Path(out))
        floor = floor_epochs(cfg, epochs + 1)
        return {"stage": summary(stage, samples), "floor": summary(floor, samples)}

    results, quiet = repeat_quietly(one_round, rounds, tries=2 * rounds)
    return {
        "samples_per_epoch": samples,
        "inputs": int(np.prod(data.meta["input_shape"])),
        "batch_size": cfg.data.batch_size,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "rounds": results,
        "quiet": quiet,
    }


def image_config(tmp: Path, rows: int, size: int = 64) -> Config:
    """resnet18 with the images' augmentation, its paths under `tmp`, where the features of
    `rows` synthetic uint8 RGB images (5 classes, brightness following the class) are written
    as an image source's features stage writes them."""
    images = (ROOT / "conf/data/images.yaml").is_file()
    overrides = ["model=timm", "model.name=resnet18", "data.num_workers=2"]
    overrides += ["data=images"] if images else [IMAGE_AUGMENT]
    cfg = compose_config(ROOT / "conf", overrides)[1]
    cfg = cfg.model_copy(update={"paths": cfg.paths.rebased(tmp)})
    rng = np.random.default_rng(0)
    sizes = {"train": rows, "val": max(rows // 8, 5), "test": max(rows // 8, 5)}
    for split, n in sizes.items():
        y = np.arange(n) % 5
        x = rng.integers(0, 128, (n, 3, size, size)) + (y * 30)[:, None, None, None]
        (cfg.paths.features / split).mkdir(parents=True)
        np.save(cfg.paths.features / split / "x.npy", x.astype(np.uint8))
        np.save(cfg.paths.features / split / "y.npy", y.astype(np.int64))
    meta = {
        "classes": [f"c{i}" for i in range(5)],
        "feature_names": None,
        "input_shape": [3, size, size],
        "input_dtype": "uint8",
        "normalization": {"mean": [124.0] * 3, "std": [45.0] * 3},
        "sizes": sizes,
    }
    (cfg.paths.features / "meta.json").write_text(json.dumps(meta))
    return cfg


def images(args: argparse.Namespace) -> None:
    """The --images form: measure, then write its section of docs/performance.md."""
    from record import stamp, write_section

    rows = 128 if args.smoke else args.rows or 1024
    with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-images-") as tmp:
        cfg = image_config(Path(tmp), rows)
        tp = measure(cfg, args.epochs or 2, args.rounds)
        steps = ", ".join(s.target.rsplit(".", 1)[-1] for s in cfg.data.augment)
    lines = [
        stamp(),
        "",
        f"{rows:,} synthetic uint8 RGB images of 64x64, 5 classes, in an image source's features "
        f"format; timm's resnet18 (`model=timm`, random weights), augmented by {steps} in "
        f"{cfg.data.num_workers} loader workers, for the train stage and the plain loop alike.",
        "",
        *report(tp, "Image training throughput", IMAGE_GOAL),
    ]
    text = "\n".join(lines) + "\n"
    write_section(
        "throughput-images", "Image training: the train stage against plain PyTorch", text
    )


def main() -> None:
    prepare_process()  # the kernels the train stage's CLI pins, before torch first computes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, nargs="?", help="a repository with data/features")
    parser.add_argument("--table", action="store_true", help="a synthetic table instead")
    parser.add_argument("--images", action="store_true", help="synthetic images, resnet18")
    parser.add_argument("--rows", type=int, help="--table: its rows (200,000); --images (1,024)")
    parser.add_argument("--features", type=int, default=50, help="--table: its columns")
    parser.add_argument("--epochs", type=int, help="timed epochs per run (20; --table: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="quiet rounds (one run per loop)")
    args = smoke.parse_args(parser)
    if sum((args.repo is not None, args.table, args.images)) != 1:
        parser.error("give one of REPO, --table or --images")
    if args.smoke:
        args.epochs, args.rounds = 1, 1
        args.rows = 2_000 if args.table else None
    warnings.filterwarnings("ignore", message=".*treespec.*deprecated")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*no `validation_step`.*")  # the floor skips validation
    if args.repo is not None:
        os.chdir(args.repo)  # params.yaml paths are relative to the repository root
        print(json.dumps(measure(load_config("params.yaml"), args.epochs or 20, args.rounds)))
        return
    if args.images:
        images(args)
        return
    args.rows = args.rows or 200_000

    from record import stamp, write_section
    from synthetic import run_stages

    with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-throughput-") as tmp:
        stages = ("ingest", "prepare", "features")
        cfg = load_config(run_stages(Path(tmp), args.rows, stages, features=args.features))
        tp = measure(cfg, args.epochs or 3, args.rounds)
    lines = [
        stamp(),
        "",
        f"A synthetic table (bench/synthetic.py) of {args.rows:,} rows and {args.features} "
        "columns, 5 classes, through the ingest, prepare and features stages with the tabular "
        f"defaults (`data=tabular`, `model=mlp`); the network takes "
        f"{tp['inputs']} inputs per row (numbers, missing indicators, one-hot slots).",
        "",
        *report(tp, "Tabular training throughput", GOAL),
    ]
    text = "\n".join(lines) + "\n"
    title = "Tabular training: the train stage against plain PyTorch"
    write_section("throughput-table", title, text)


if __name__ == "__main__":
    main()
