"""LightningDataModule over the prepared splits, held in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mlpipeline.data.splits import SPLITS, read_meta, read_split


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


def keep_batch(batch: Any) -> Any:
    """collate_fn for TensorBatches: the batch is already assembled."""
    return batch


class ArrayDataModule(L.LightningDataModule):
    """Train/val/test loaders over the features of each split (memory-mapped); the train
    order is seeded. `splits` replaces them by arrays in memory (a cross-validation fold)."""

    def __init__(
        self,
        directory: Path,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.data: dict[str, TensorBatches] = {
            name: TensorBatches(torch.from_numpy(x), torch.from_numpy(y))
            for name, (x, y) in (splits or {}).items()
        }

    def setup(self, stage: str | None = None) -> None:
        for name in SPLITS if not self.data else ():
            if name not in self.data:
                x, y = read_split(self.directory, name, mmap=True)
                self.data[name] = TensorBatches(torch.from_numpy(x), torch.from_numpy(y))

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
