"""LightningModules around a network from `myproject.models.nets`: a cross-entropy
classifier, and a regressor (mean squared error or Huber loss on a single output)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, R2Score
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class EpochOutputs:
    """A training epoch's per-step losses, predictions and labels, written into tensors sized
    once per epoch: thousands of small tensors kept from step to step fragment the heap, which
    grew by several times their size over a large table's epoch."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.sizes: list[int] = []
        self.rows = 0

    def add(self, steps: int, loss: torch.Tensor, preds: torch.Tensor, y: torch.Tensor) -> None:
        """Keep one step's outputs; `steps`: the epoch's step count, known at its first step."""
        if self.buffers is None:
            rows = steps * len(y)  # the first batch is a full one
            self.buffers = (
                loss.new_empty(steps),
                preds.new_empty((rows, *preds.shape[1:])),
                y.new_empty((rows, *y.shape[1:])),
            )
        losses, all_preds, targets = self.buffers
        start, end = self.rows, self.rows + len(y)
        losses[len(self.sizes)] = loss
        all_preds[start:end] = preds
        targets[start:end] = y
        self.sizes.append(len(y))
        self.rows = end

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The losses, batch sizes (float32), predictions and labels so far; then clear."""
        assert self.buffers is not None
        losses, preds, targets = self.buffers
        steps, rows = len(self.sizes), self.rows
        sizes = torch.tensor(self.sizes, dtype=torch.float32)
        self.clear()
        return losses[:steps], sizes, preds[:rows], targets[:rows]


class Classifier(L.LightningModule):
    """Trains `network` (logits out) with the optimizer and scheduler specs from the config, and
    keeps each epoch's metrics (`history`), handing each row to `report_epoch` when given.

    Optimization is manual: one backward and one optimizer step per batch, without Lightning's
    per-step closure and its optimizer hooks, which cost a small network a noticeable share of
    its step (docs/performance.md). Lightning leaves gradient clipping and accumulation to the
    module in this mode: the trainer settings of the same names arrive here
    (`mlpipeline.models.training` passes them), with the same meaning.
    """

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int = 1,
        report_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.network = network
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.clip_val, self.clip_algorithm = gradient_clip_val, gradient_clip_algorithm or "norm"
        self.accumulate = accumulate_grad_batches
        self.train_loss = MeanMetric()
        self.epoch_outputs = EpochOutputs()
        # the inputs are this module's own predictions and the prepared labels (checked by the
        # prepare stage): torchmetrics' per-call input checks would only cost time
        fast = {"num_classes": num_classes, "validate_args": False}
        self.train_acc = MulticlassAccuracy(average="micro", **fast)
        self.val_acc = MulticlassAccuracy(average="micro", **fast)
        self.val_f1 = MulticlassF1Score(average="macro", **fast)
        self.history: list[dict[str, float]] = []
        self.report_epoch = report_epoch

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets this around each of the hook calls of a training step, and through
        # nn.Module.__setattr__ (which looks for parameters, buffers and submodules) that is a
        # measurable share of a small network's step
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        outputs = self.network(x)
        loss = self.loss(outputs, y)
        self.manual_backward(loss / self.accumulate if self.accumulate > 1 else loss)
        last = self.trainer.is_last_batch
        if (index + 1) % self.accumulate == 0 or last:
            optimizer = self.optimizers()
            if self.clip_val:
                self.clip_gradients(optimizer, self.clip_val, self.clip_algorithm)
            optimizer.step()
            optimizer.zero_grad()
        # A `self.log` or torchmetrics call per step costs a tenth of a small model's step:
        # keep the epoch's losses and predictions, and compute and log its metrics once, on
        # its last batch (before the on_train_epoch_end hooks that read them)
        steps = int(self.trainer.num_training_batches)
        self.epoch_outputs.add(steps, loss.detach(), self.prediction(outputs.detach()), y)
        if last:
            losses, sizes, preds, targets = self.epoch_outputs.take()
            self.train_loss.update(losses, weight=sizes.to(self.device))
            # compute() syncs across DDP ranks
            self.log(
                "train_loss", self.train_loss.compute(), on_step=False, on_epoch=True, prog_bar=True
            )
            self.train_loss.reset()
            self.log_train_epoch(preds, targets)
        return loss

    def prediction(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the epoch's training metrics need of one batch's outputs: the class."""
        return outputs.argmax(dim=1)

    def log_train_epoch(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        self.train_acc.update(preds, targets)
        self.log("train_acc", self.train_acc.compute(), on_step=False, on_epoch=True)
        self.train_acc.reset()

    def on_train_epoch_end(self) -> None:
        # Module hooks, not a callback: Lightning calls each callback's hooks on every step.
        # Validation has run; the monitoring callbacks (checkpoint, early stopping) come next.
        row = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        row["epoch"] = self.current_epoch
        row["lr"] = self.optimizers().param_groups[0]["lr"]  # the rate this epoch trained at
        self.history.append(row)
        if self.report_epoch is not None:
            self.report_epoch(row)
        # the next epoch's rate (automatic optimization would step here too, before validation)
        if self.scheduler_spec is not None:
            self.lr_schedulers().step()

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


class Regressor(Classifier):
    """Trains `network` (one output, in the target's units) on a numeric target with mean
    squared error or Huber loss, both taken on the standardised target (`target`: the training
    split's mean and std), so that the loss and Huber's threshold do not depend on the units;
    validation reports MAE, RMSE and R^2 (in the target's units) besides the loss."""

    def __init__(
        self, network: nn.Module, loss: str, target: dict[str, float], **kwargs: Any
    ) -> None:
        super().__init__(network, 2, **kwargs)  # the class count only sizes unused metrics
        self.loss_name = loss
        self.mean, self.std = target["mean"], target["std"]
        del self.train_acc, self.val_acc, self.val_f1
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_r2 = R2Score()

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        predicted = (outputs.squeeze(1) - self.mean) / self.std
        y = (y - self.mean) / self.std
        if self.loss_name == "huber":
            return F.huber_loss(predicted, y)
        return F.mse_loss(predicted, y)

    def prediction(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(1)

    def log_train_epoch(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        pass  # the training loss says it; the scores are validation's

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        outputs = self(x)
        predicted = outputs.squeeze(1)
        self.val_mae(predicted, y)
        self.val_rmse(predicted, y)
        self.val_r2(predicted, y)
        self.log("val_loss", self.loss(outputs, y), prog_bar=True, sync_dist=True)
        self.log("val_mae", self.val_mae, prog_bar=True)
        self.log("val_rmse", self.val_rmse)
        self.log("val_r2", self.val_r2)
