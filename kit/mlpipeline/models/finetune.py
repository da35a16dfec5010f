"""Fine-tuning a pretrained network: its backbone frozen for the first epochs, then trained at
a lower learning rate than its new head."""

from __future__ import annotations

from typing import Annotated, Any

import lightning as L
from pydantic import Field
from torch import nn

from mlpipeline.errors import PipelineError


class BackboneFinetuning(L.Callback):
    """Freezes the backbone (every parameter but the classifier head's, which timm's
    `get_classifier` names) for `freeze_epochs` epochs, and trains it at `backbone_lr_ratio`
    times the optimizer's learning rate (the scheduler scales both alike). With the defaults
    (0 epochs, ratio 1) it changes nothing, whatever the network."""

    def __init__(
        self,
        freeze_epochs: Annotated[int, Field(ge=0)] = 0,
        backbone_lr_ratio: Annotated[float, Field(gt=0, le=1)] = 1.0,
    ) -> None:
        self.freeze_epochs, self.ratio = freeze_epochs, backbone_lr_ratio
        self.backbone: list[nn.Parameter] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.freeze_epochs == 0 and self.ratio == 1:
            return
        self.backbone = backbone_parameters(pl_module)
        for param in self.backbone:
            param.requires_grad = self.freeze_epochs == 0
        if self.ratio != 1:
            for optimizer in trainer.optimizers:
                self._split(optimizer, trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.backbone and trainer.current_epoch >= self.freeze_epochs:
            for param in self.backbone:
                param.requires_grad = True

    def _split(self, optimizer: Any, trainer: L.Trainer) -> None:
        """Move the backbone's parameters of each group into a group of their own at `ratio`
        times its rate, and give the schedulers of `optimizer` that group's base rate."""
        ids = {id(p) for p in self.backbone}
        added = []
        for group in list(optimizer.param_groups):
            slow = [p for p in group["params"] if id(p) in ids]
            if not slow:
                continue
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            scaled = {k: v * self.ratio for k, v in group.items() if k in ("lr", "initial_lr")}
            optimizer.add_param_group({**group, **scaled, "params": slow})
            added.append(group)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "optimizer", None) is not optimizer:
                continue
            for group in added:
                base = group.get("initial_lr", group["lr"])
                for attr in ("base_lrs", "_last_lr"):
                    if isinstance(values := getattr(scheduler, attr, None), list):
                        values.append(base * self.ratio)
                if isinstance(min_lrs := getattr(scheduler, "min_lrs", None), list):
                    min_lrs.append(min_lrs[0])


def backbone_parameters(pl_module: nn.Module) -> list[nn.Parameter]:
    """The parameters of the first submodule with a classifier head (timm's `get_classifier`),
    less the head's."""
    for module in pl_module.modules():
        if callable(getattr(module, "get_classifier", None)):
            head = {id(p) for p in module.get_classifier().parameters()}
            return [p for p in module.parameters() if id(p) not in head]
    raise PipelineError(
        "callbacks.finetune: the network has no classifier head to tell from its backbone "
        "(timm's get_classifier): use model=timm, or freeze_epochs 0 and backbone_lr_ratio 1"
    )
