"""Networks, plain torch modules built from conf/model/. A new network is a class here (or
anywhere importable) taking `in_shape` and `num_classes`, plus a file in conf/model/ naming it
with `_target_`; the annotations of its other arguments are what the config is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from mlpipeline.api import PipelineError, timm_network

Width = Annotated[int, Field(ge=1)]
Dropout = Annotated[float, Field(ge=0, lt=1)]


class CNN(nn.Module):
    """Small convolutional net for (C, H, W) images: conv-relu-pool blocks, then an MLP head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[Width] = (16, 32),
        hidden: Width = 64,
        dropout: Dropout = 0.1,
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
        hidden: Sequence[Width] = (128, 64),
        dropout: Dropout = 0.1,
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


class Timm(nn.Module):
    """Any timm architecture (`name`, e.g. resnet18) for (C, H, W) images, with a new head for
    the classes. `pretrained`: false, a weights file under `weights_dir` (.safetensors, .pth),
    true (timm's default weights) or "hf-hub:<repo>"; the last two download them."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        name: str = "resnet18",
        pretrained: bool | str = False,
        weights_dir: str = "weights",
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise PipelineError(
                f"model Timm needs image inputs (C, H, W) but the data has shape {tuple(in_shape)}"
            )
        self.model = timm_network(name, in_shape[0], num_classes, pretrained, weights_dir)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
