"""The model file that train writes and evaluate and export read: the network's spec (its
config, input shape, classes and normalisation) beside its weights, so it rebuilds itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlpipeline.artifacts import atomic_path
from mlpipeline.config import locate
from mlpipeline.errors import PipelineError

MODEL_FORMAT = 1


class Normalize(nn.Module):
    """(x - mean) / std with constants fitted on the training split, kept in the model."""

    def __init__(self, mean: Any, std: Any) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ToFloat(nn.Module):
    """Casts the model's input (uint8 image pixels) to float32, so the exported model takes
    the images' bytes as they are and the casting is part of it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)


class Rescale(Normalize):
    """x * std + mean: a regression network's standardised output in the target's units."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def build_network(spec: dict[str, Any], pretrained: bool = True) -> nn.Sequential:
    """Normalize + the configured net, from a spec: net (with `_target_`), in_shape,
    num_classes and normalization (mean, std); for a regression also `target` (mean, std),
    which a last Rescale layer applies to the net's standardised output; with `input_dtype`
    uint8 (images) a first ToFloat layer (absent: float32 input, no cast). `pretrained`
    False builds a net that takes a `pretrained` argument without its pretrained weights."""
    net_cfg = dict(spec["net"])
    if not pretrained and "pretrained" in net_cfg:
        net_cfg["pretrained"] = False
    target = locate(net_cfg.pop("_target_"))
    net = target(in_shape=spec["in_shape"], num_classes=spec["num_classes"], **net_cfg)
    norm = spec["normalization"]
    mean, std = (torch.as_tensor(norm[k], dtype=torch.float32) for k in ("mean", "std"))
    if len(spec["in_shape"]) == 3 and mean.ndim == 1:
        # one value per channel, given flat: shaped to broadcast over (C, H, W)
        mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
    layers: list[nn.Module] = [Normalize(mean, std), net]
    if spec.get("input_dtype", "float32") == "uint8":
        layers.insert(0, ToFloat())
    if scale := spec.get("target"):
        layers.append(Rescale(scale["mean"], scale["std"]))
    return nn.Sequential(*layers)


def save_model(path: Path, spec: dict[str, Any], network: nn.Module) -> None:
    """Write spec + weights with torch.save (byte-identical for identical weights)."""
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "spec": spec, "state_dict": state}, tmp)


def load_model(path: Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """Rebuild the network from a model file; returns it in eval mode with its spec."""
    if not Path(path).is_file():
        raise PipelineError(f"{path} not found: run the train stage first (dvc repro)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != MODEL_FORMAT:
        raise PipelineError(f"{path} has model format {saved.get('format')}, expected 1: retrain")
    # the saved weights replace any pretrained ones, whose file need not be there any more
    network = build_network(saved["spec"], pretrained=False)
    network.load_state_dict(saved["state_dict"])
    return network.eval(), saved["spec"]
