"""LightningDataModule over the prepared splits, held in memory; training images optionally
augmented on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mlpipeline.config import instantiate
from mlpipeline.data.splits import SPLITS, read_meta, read_split
from mlpipeline.errors import PipelineError

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorBatches(Dataset):
    """Indexes a whole batch at once (`__getitems__`): one gather per batch instead of
    batch_size item lookups and a collate, which is most of the step time on small models."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx)
        return self.x[index], self.y[index]


class AugmentedBatches(TensorBatches):
    """TensorBatches whose images each go through `transform` as their batch is gathered:
    in the loader's worker processes, each seeded by the loader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Transform) -> None:
        super().__init__(x, y)
        self.transform = transform

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitems__(idx)
        return torch.stack([self.transform(image) for image in x]), y


def augmentation(specs: list[dict[str, Any]]) -> Transform | None:
    """The `data.augment` specs (torchvision.transforms.v2 classes) composed, or None when
    there are none."""
    if not specs:
        return None
    # torchvision's import takes a second, and only augmentation needs it
    from torchvision.transforms import v2

    steps = [instantiate(spec, f"data.augment.{i}") for i, spec in enumerate(specs)]
    return v2.Compose(steps)


def check_augmentation(transform: Transform, x: torch.Tensor) -> None:
    """Refuse an augmentation that changes an image's shape or dtype (the batch could not be
    stacked, nor the network take it), trying it on the first image without touching the
    seeded random state."""
    with torch.random.fork_rng():
        out = transform(x[0])
    if not isinstance(out, torch.Tensor) or out.shape != x[0].shape or out.dtype != x.dtype:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out)
        raise PipelineError(
            f"data.augment turns a {tuple(x[0].shape)} {x.dtype} image into {got}: it must "
            "keep both (give RandomResizedCrop and the like the data's size, [height, width])"
        )


def keep_batch(batch: Any) -> Any:
    """collate_fn for TensorBatches: the batch is already assembled."""
    return batch


class ArrayDataModule(L.LightningDataModule):
    """Train/val/test loaders over the features of each split (memory-mapped); the train
    order is seeded. `splits` replaces them by arrays in memory (a cross-validation fold);
    `augment` transforms each training image (uint8 (C, H, W) in and out)."""

    def __init__(
        self,
        directory: Path,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        augment: Transform | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.augment = augment
        self.data: dict[str, TensorBatches] = {
            name: TensorBatches(torch.from_numpy(x), torch.from_numpy(y))
            for name, (x, y) in (splits or {}).items()
        }

    def setup(self, stage: str | None = None) -> None:
        for name in SPLITS if not self.data else ():
            if name not in self.data:
                x, y = read_split(self.directory, name, mmap=True)
                self.data[name] = TensorBatches(torch.from_numpy(x), torch.from_numpy(y))
        train = self.data.get("train")
        if self.augment is not None and train is not None and type(train) is TensorBatches:
            check_augmentation(self.augment, train.x)
            self.data["train"] = AugmentedBatches(train.x, train.y, self.augment)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.data[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
