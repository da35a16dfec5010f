"""GPU paths: single GPU at each precision, two-GPU DDP, and fine-tuning timm's resnet18 with
mixed precision and channels-last (its images per second printed). Skipped, with the reason, where
torch sees no CUDA device (as on this project's CI)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import run, tiny_params

from mlpipeline.models.training import fit
from mlpipeline.stages.evaluate import evaluate
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train

pytestmark = pytest.mark.gpu
gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
one_gpu = pytest.mark.skipif(gpus < 1, reason="needs a CUDA GPU; torch sees none")
two_gpus = pytest.mark.skipif(gpus < 2, reason=f"needs 2 CUDA GPUs; torch sees {gpus}")


@one_gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_single_gpu_training(make_cfg, precision: str) -> None:
    cfg = make_cfg("trainer=gpu", f"trainer.precision={precision}", "trainer.max_epochs=10")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    result = train(cfg)
    print(f"{precision}: {result.epochs} epochs, best val_loss {result.best_score:.4f}")
    assert evaluate(cfg)["scalars"]["accuracy"] >= 0.9


@two_gpus
def test_two_gpu_ddp(tmp_path: Path) -> None:
    params, cfg = tiny_params(tmp_path, "trainer=ddp", "trainer.devices=2")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    out = run(["python", "-m", "mlpipeline.stages.train", "--params", str(params)], tmp_path)
    assert "MEMBER: 2/2" in out.stdout + out.stderr
    assert cfg.paths.model.is_file()


class ChannelsLast(L.Callback):
    """The network in channels-last memory format, and the images per second of each epoch's
    training batches."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self, *_: Any) -> None:
        torch.cuda.synchronize()
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self.images += len(batch[1])

    def on_train_epoch_end(self, *_: Any) -> None:
        torch.cuda.synchronize()
        self.rates.append(self.images / (time.perf_counter() - self.start))


@one_gpu
def test_fine_tuning_resnet18_with_mixed_precision_and_channels_last(
    make_cfg, tmp_path: Path
) -> None:
    from test_images_training import saved_weights, write_images

    weights = saved_weights(tmp_path / "weights")
    cfg = make_cfg(
        "trainer=gpu",
        "trainer.precision=16-mixed",
        "trainer.max_epochs=3",
        "callbacks.early_stopping=null",
        "model=timm",
        f"model.pretrained={weights}",
        f"model.weights_dir={weights.parent}",
        "callbacks.finetune.freeze_epochs=1",
        "callbacks.finetune.backbone_lr_ratio=0.1",
        "data.batch_size=128",
        "data.num_workers=4",
        "data.augment=[{_target_:torchvision.transforms.v2.RandomHorizontalFlip}]",
    )
    write_images(cfg.paths.features, rows=4096)
    timer = ChannelsLast()
    result = fit(cfg, callbacks=[timer])
    print(f"resnet18 fine-tuned, 16-mixed, channels-last: images/s per epoch {timer.rates}")
    assert result.device == "cuda" and len(timer.rates) == 3
