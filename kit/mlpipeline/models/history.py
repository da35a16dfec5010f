"""The per-epoch history of a training run, recorded from what the LightningModule logs: the
rows of reports/train/history.csv, and one readable line per epoch for a log file."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L


class EpochHistory(L.Callback):
    """Keeps one row per epoch (`rows`) of the logged values named in `columns`, plus `epoch`
    and `lr` (the rate the epoch trained at); prints each row as a line when `echo`.

    An epoch's row is read from `trainer.callback_metrics` when the next epoch starts, or when
    training ends: Lightning calls a callback's `on_train_epoch_end` before the module's, so
    values a module logs there (its training metrics, once per epoch) are only there after.
    The rate is read at the epoch's start: Lightning steps an epoch's scheduler after its
    last batch."""

    def __init__(self, columns: Sequence[str], max_epochs: int, echo: bool) -> None:
        self.columns, self.max_epochs, self.echo = tuple(columns), max_epochs, echo
        self.rows: list[dict[str, float]] = []
        self.lr = float("nan")
        self.pending: int | None = None  # the epoch whose row is still to read

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._record(trainer)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.pending = trainer.current_epoch

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        if self.pending is None:
            return
        logged = trainer.callback_metrics
        row = {k: float(logged[k]) for k in self.columns if k in logged}
        row["epoch"], row["lr"] = self.pending, self.lr
        self.rows.append(row)
        if self.echo and trainer.is_global_zero:
            shown = [k for k in self.columns if k in row and k not in ("epoch", "lr")]
            scores = "  ".join(f"{k} {row[k]:.4g}" for k in shown)
            print(f"epoch {self.pending + 1}/{self.max_epochs}: {scores}", flush=True)
        self.pending = None
