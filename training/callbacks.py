"""Training callbacks shared by every recipe."""

from __future__ import annotations

import os
import time

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.trainer.states import TrainerFn


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


class TrainingThreads(Callback):
    """On a CPU, the training process's intra-op threads leave a core to each loader worker while training.

    Every loader worker is a process of its own that decodes, pastes and augments on a core; torch's default of
    one intra-op thread per core in the training process then asks for more threads than there are cores, and
    the threads of its parallel kernels wait on each other (on 2 cores with 2 workers, the PFM-1 recipe trained
    about 1.4 times as many steps per second with one intra-op thread: experiments/pfm1/fit_speed.py). During
    training the process keeps ``cores - workers`` threads, at least one; validation and testing, whose loaders do
    far less per image, get every core back. ``threads`` sets the training count by hand (0: torch's own count
    throughout); accelerators other than the CPU are left alone.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._default: int | None = None

    def training_threads(self, trainer: L.Trainer) -> int | None:
        """The intra-op threads training runs with, or None to keep torch's own."""
        if not isinstance(trainer.accelerator, CPUAccelerator):
            return None
        if self.threads is not None:
            return int(self.threads) or None
        workers = int(getattr(trainer.datamodule, "num_workers", 0) or 0)
        return max(1, usable_cores() - workers) if workers else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._default = torch.get_num_threads()

    def _set(self, threads: int | None) -> None:
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(self.training_threads(trainer))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        threads = cpu_training_threads(trainer)
        if threads is not None and trainer.logger is not None:
            trainer.logger.log_hyperparams({"cpu_training_threads": threads})

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(self._default)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._set(self.training_threads(trainer))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._set(self._default)


def cpu_training_threads(trainer: L.Trainer) -> int | None:
    """The intra-op threads the training steps of ``trainer`` run with on a CPU (None on other accelerators)."""
    if not isinstance(trainer.accelerator, CPUAccelerator):
        return None
    callback = next((c for c in trainer.callbacks if isinstance(c, TrainingThreads)), None)
    threads = callback.training_threads(trainer) if callback is not None else None
    if threads is None:
        threads = callback._default if callback is not None and callback._default else torch.get_num_threads()
    return int(threads)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
