"""LightningModule: cross-entropy classifier around a network from nets.py."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class Classifier(L.LightningModule):
    """Trains `network` (logits out) with the optimizer and scheduler specs from the config."""

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.train_loss = MeanMetric()
        self.epoch_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # A `self.log` or torchmetrics call per step costs a tenth of a small model's step:
        # keep the epoch's losses and predictions, and compute and log its metrics once, on
        # its last batch (before the on_train_epoch_end hooks that read them)
        self.epoch_outputs.append((loss.detach(), logits.detach().argmax(dim=1), y))
        if self.trainer.is_last_batch:
            losses, preds, targets = zip(*self.epoch_outputs, strict=True)
            self.epoch_outputs.clear()
            sizes = torch.tensor([len(t) for t in targets], dtype=torch.float32)
            self.train_loss.update(torch.stack(losses), weight=sizes.to(self.device))
            self.train_acc.update(torch.cat(preds), torch.cat(targets))
            # compute() syncs across DDP ranks
            self.log(
                "train_loss", self.train_loss.compute(), on_step=False, on_epoch=True, prog_bar=True
            )
            self.log("train_acc", self.train_acc.compute(), on_step=False, on_epoch=True)
            self.train_loss.reset()
            self.train_acc.reset()
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.val_f1(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_f1", self.val_f1)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.optimizer_spec, params=self.parameters())
        if self.scheduler_spec is None:
            return optimizer
        scheduler = instantiate(self.scheduler_spec, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
