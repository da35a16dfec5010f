"""The per-epoch history of a training run, recorded from what the LightningModule logs: the
rows of reports/train/history.csv, and one readable line per epoch for a log file."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L


class EpochHistory(L.Callback):
    """Keeps one row per epoch (`rows`) of the logged values named in `columns`, plus `epoch`
    and `lr` (the rate the epoch trained at); prints each row as a line when `echo`.

    It reads `trainer.callback_metrics` at the end of each training epoch: Lightning has then
    run the epoch's validation and reduced the values logged with `on_epoch=True`. Values a
    module logs in its own `on_train_epoch_end` come after this hook (Lightning calls callbacks
    first) and are not recorded. The rate is read at the epoch's start: Lightning steps an
    epoch's scheduler after its last batch, before this hook."""

    def __init__(self, columns: Sequence[str], max_epochs: int, echo: bool) -> None:
        self.columns, self.max_epochs, self.echo = tuple(columns), max_epochs, echo
        self.rows: list[dict[str, float]] = []
        self.lr = float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logged = trainer.callback_metrics
        row = {k: float(logged[k]) for k in self.columns if k in logged}
        row["epoch"] = trainer.current_epoch
        row["lr"] = self.lr
        self.rows.append(row)
        if self.echo and trainer.is_global_zero:
            shown = [k for k in self.columns if k in row and k not in ("epoch", "lr")]
            scores = "  ".join(f"{k} {row[k]:.4g}" for k in shown)
            print(f"epoch {trainer.current_epoch + 1}/{self.max_epochs}: {scores}", flush=True)
