"""A timm resnet18 fine-tuned from a local weights file by `dvc repro`, to the end of register;
the weights file is a dependency of training: a new one retrains. The weights are saved from a
locally created model (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from helpers import run, stages_run
from safetensors.torch import save_file

pytestmark = pytest.mark.slow


def save_weights(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict(), path)


def test_resnet18_fine_tuned_from_a_weights_file_and_retrained_when_it_changes(
    tiny_repo: Path,
) -> None:
    weights = tiny_repo / "weights/resnet18.safetensors"
    save_weights(weights, seed=1)
    run(["dvc", "add", "weights/resnet18.safetensors"], tiny_repo)
    config = tiny_repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - model: cnn\n", "  - model: timm\n"))
    # the file is `# @package _global_`, which a YAML round trip would drop
    timm_conf = tiny_repo / "conf/model/timm.yaml"
    text = timm_conf.read_text()
    for old, new in (
        ("pretrained: false", "pretrained: weights/resnet18.safetensors"),
        ("freeze_epochs: 0", "freeze_epochs: 1"),
        ("backbone_lr_ratio: 1.0", "backbone_lr_ratio: 0.1"),
    ):
        text = text.replace(old, new)
    timm_conf.write_text(text)

    out = run(["dvc", "repro"], tiny_repo).stdout
    assert {"train", "export", "register"} <= set(stages_run(out))
    card = json.loads((tiny_repo / "models/model_card.json").read_text())
    assert "registered" in out and card
    assert "resnet18" in (tiny_repo / "params.yaml").read_text()

    save_weights(weights, seed=2)
    status = run(["dvc", "status", "train"], tiny_repo).stdout
    assert "modified:" in status and "weights" in status
    assert "train" in stages_run(run(["dvc", "repro", "--dry"], tiny_repo).stdout)
