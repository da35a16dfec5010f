"""LightningModules around a network from `myproject.models.nets`: a cross-entropy
classifier, and a regressor (mean squared error or Huber loss on a single output).

conf/module/ names the one to use with `_target_`; your own LightningModule can take its place
if it takes what training passes (`mlpipeline.config.targets.MODULE_INPUTS`): the network, the
optimizer and scheduler specs, and `num_classes` (classification) or `loss` and `target`
(regression). Log with `self.log`; the train stage records each epoch's logged values.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, R2Score
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

Batch = tuple[torch.Tensor, torch.Tensor]


def configure(
    module: L.LightningModule, optimizer: dict[str, Any], scheduler: dict[str, Any] | None
) -> Any:
    """What `configure_optimizers` returns: the optimizer from its `_target_` spec over the
    module's parameters, and the scheduler (if any) stepped once per epoch."""
    built = instantiate(optimizer, params=module.parameters())
    if scheduler is None:
        return built
    lr_scheduler = {"scheduler": instantiate(scheduler, optimizer=built), "interval": "epoch"}
    return {"optimizer": built, "lr_scheduler": lr_scheduler}


class Classifier(L.LightningModule):
    """Trains `network` (a score per class out) with cross-entropy; logs the loss and accuracy
    of training, and the loss, accuracy and macro F1 of validation."""

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        # the labels are the prepare stage's, already checked: torchmetrics' input checks
        # would cost every training step time
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # weighted by the batch's rows, so that a short last batch counts as much as it holds
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_acc.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        # logged once per epoch, not per step: each self.log call costs Lightning more than
        # a small network's step
        self.log("train_loss", self.train_loss, prog_bar=True)
        self.log("train_acc", self.train_acc)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y), weight=len(y))
        self.val_acc.update(logits, y)
        self.val_f1.update(logits, y)
        self.log("val_loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val_acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val_f1", self.val_f1, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        return configure(self, self.hparams.optimizer, self.hparams.scheduler)


class Regressor(L.LightningModule):
    """Trains `network` (one output, in the target's units) on a numeric target with mean
    squared error or Huber loss, both taken on the standardised target (`target`: the training
    split's mean and std), so that the loss and Huber's threshold do not depend on the units;
    validation logs MAE, RMSE and R^2 (in the target's units) besides the loss."""

    def __init__(
        self,
        network: nn.Module,
        optimizer: dict[str, Any],
        target: dict[str, float],
        scheduler: dict[str, Any] | None = None,
        loss: Literal["mse", "huber"] = "mse",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_r2 = R2Score()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).squeeze(1)

    def loss(self, predicted: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss, on the standardised prediction and target."""
        mean, std = self.hparams.target["mean"], self.hparams.target["std"]
        predicted, y = (predicted - mean) / std, (y - mean) / std
        if self.hparams.loss == "huber":
            return F.huber_loss(predicted, y)
        return F.mse_loss(predicted, y)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self.train_loss, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        predicted = self(x)
        self.val_loss.update(self.loss(predicted, y), weight=len(y))
        self.val_mae.update(predicted, y)
        self.val_rmse.update(predicted, y)
        self.val_r2.update(predicted, y)
        self.log("val_loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val_mae", self.val_mae, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val_rmse", self.val_rmse, on_step=False, on_epoch=True)
        self.log("val_r2", self.val_r2, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        return configure(self, self.hparams.optimizer, self.hparams.scheduler)
