"""Training callbacks shared by every recipe."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback, Timer


class ValidateFinalEpoch(Callback):
    """Validate the weights training ends with, whichever limit ends it.

    With ``check_val_every_n_epoch`` above 1, the last epochs before ``max_epochs`` or before the ``max_time``
    budget runs out would otherwise never be validated, so the best checkpoint could never be the fully
    annealed one. From the epoch that is the last by count, or the first whose expected end (the longest epoch so
    far, validation included) reaches past the time budget, validation runs every epoch, and the Timer's stop
    inside an epoch triggers one at once (Lightning validates a stopping epoch that is a validation epoch).
    """

    def __init__(self, margin: float = 1.5) -> None:
        self.margin = margin
        self._epoch_start: float | None = None
        self._longest = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        if self._epoch_start is not None:
            self._longest = max(self._longest, now - self._epoch_start)
        self._epoch_start = now
        if trainer.check_val_every_n_epoch in (None, 1):
            return
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if may_be_last_epoch(trainer.current_epoch, trainer.max_epochs, remaining, self._longest, self.margin):
            trainer.check_val_every_n_epoch = 1


def may_be_last_epoch(
    epoch: int, max_epochs: int | None, remaining_s: float | None, longest_epoch_s: float, margin: float = 1.5
) -> bool:
    """Whether epoch ``epoch`` (0-based) is the last by count, or may not finish within the ``remaining_s``
    seconds of a time budget when epochs take up to ``longest_epoch_s`` (0: none measured yet)."""
    if max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs - 1:
        return True
    return remaining_s is not None and longest_epoch_s > 0 and remaining_s < margin * longest_epoch_s
