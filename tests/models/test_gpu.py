"""GPU paths: single GPU at each precision, and two-GPU DDP. Skipped, with the reason, where
torch sees no CUDA device (as on this project's CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run, tiny_params

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
