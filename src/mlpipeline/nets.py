"""Networks (plain torch) and the self-describing model file shared by train, evaluate, export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlpipeline.artifacts import atomic_path
from mlpipeline.config import locate
from mlpipeline.errors import PipelineError

MODEL_FORMAT = 1


class CNN(nn.Module):
    """Small convolutional net for (C, H, W) images: conv-relu-pool blocks, then an MLP head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise PipelineError(
                f"model CNN needs image inputs (C, H, W) but the data has shape {tuple(in_shape)}; "
                "use model=mlp for tabular data"
            )
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected net; flattens any input shape."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        width = int(torch.tensor(in_shape).prod())
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Normalize(nn.Module):
    """(x - mean) / std with constants fitted on the training split, kept in the model."""

    def __init__(self, mean: Any, std: Any) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_network(spec: dict[str, Any]) -> nn.Sequential:
    """Normalize + the configured net, from a spec: net (with `_target_`), in_shape,
    num_classes and normalization (mean, std)."""
    net_cfg = dict(spec["net"])
    target = locate(net_cfg.pop("_target_"))
    net = target(in_shape=spec["in_shape"], num_classes=spec["num_classes"], **net_cfg)
    norm = spec["normalization"]
    return nn.Sequential(Normalize(norm["mean"], norm["std"]), net)


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
    network = build_network(saved["spec"])
    network.load_state_dict(saved["state_dict"])
    return network.eval(), saved["spec"]


def predict_proba(network: nn.Module, x: Any, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities for a float32 array, in batches, on the CPU."""
    x = torch.as_tensor(x, dtype=torch.float32)
    with torch.inference_mode():
        parts = [
            network(x[i : i + batch_size]).softmax(dim=1) for i in range(0, len(x), batch_size)
        ]
    return torch.cat(parts)
