"""``ordnance train fit|validate|test|predict --config configs/<recipe>.yaml`` through LightningCLI."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from jsonargparse import lazy_instance
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from ordnance.datasets.datamodule import DetectionDataModule
from ordnance.training.callbacks import TrainingThreads, ValidateFinalEpoch
from ordnance.training.task import DetectionTask
from ordnance.training.tracking import LogConfig, MLflowArtifacts, OrdnanceMLFlowLogger

log = logging.getLogger(__name__)

# DetectionTask arguments that set how a run evaluates, not what its weights are: never taken from a checkpoint.
EVALUATION_ONLY = ("test_flips",)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 autocast is emulated
    and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class OrdnanceCLI(LightningCLI):
    """LightningCLI that falls back from bf16 autocast to float32 on CPUs without native bf16, and takes the CPU
    training threads from the recipe (``training_threads``, beside ``seed_everything``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--training_threads",
            type=NonNegativeInt | None,
            default=None,
            help="Intra-op threads of the training steps on a CPU: unset, one per core the loader workers leave"
            " (training/callbacks.py TrainingThreads); 0, torch's own count; n, n threads.",
        )

    def _training_threads(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("training_threads")
        for callback in self.trainer.callbacks:
            if isinstance(callback, TrainingThreads):
                callback.threads = threads

    def before_instantiate_classes(self) -> None:
        import torch

        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is None or str(trainer.get("precision")) != "bf16-mixed":
            return
        on_cpu = trainer.get("accelerator") == "cpu" or not torch.cuda.is_available()
        if on_cpu and not cpu_has_bf16():
            log.warning("precision bf16-mixed: this CPU has no native bfloat16; training in float32 instead")
            trainer["precision"] = "32-true"
            self._precision_requested = "bf16-mixed"

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path``, Lightning takes the model's arguments from the checkpoint over the command line's.
        Settings of the evaluation only (``EVALUATION_ONLY``: not weights, chosen per run) stay as the command line
        and config give them, so ``ordnance train test --ckpt_path X --model.test_flips 2`` tests two views."""
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        keep = {k: model.get(k) for k in EVALUATION_ONLY if model is not None and model.get(k) is not None}
        super()._parse_ckpt_path()
        for key, value in keep.items():
            self.config[subcommand]["model"][key] = value

    def instantiate_classes(self) -> None:
        """The model learns the precision the recipe asked for when it fell back, so the checkpoint (and the card
        exported from it) says so (``DetectionTask.training_record``)."""
        super().instantiate_classes()
        self._training_threads()
        requested = getattr(self, "_precision_requested", None)
        if requested is not None and hasattr(self.model, "precision_requested"):
            self.model.precision_requested = requested


def trainer_defaults() -> dict:
    return {
        "logger": lazy_instance(OrdnanceMLFlowLogger),
        "callbacks": [
            ModelCheckpoint(
                monitor=DetectionTask.monitor, mode=DetectionTask.mode, save_last=True, filename="best-{epoch:03d}"
            ),
            LearningRateMonitor(logging_interval="step"),
            MLflowArtifacts(),
            ValidateFinalEpoch(),
            TrainingThreads(),
        ],
        "default_root_dir": "runs",
    }


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Entry point; tests call it with an argument list."""
    return OrdnanceCLI(
        DetectionTask,
        DetectionDataModule,
        seed_everything_default=0,
        trainer_defaults=trainer_defaults(),
        save_config_callback=LogConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "ordnance train"},
    )


@click.command(
    "train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Train detectors from YAML configs (LightningCLI): fit, validate, test, predict. See --help."""
    # sys.argv stays this command's own, so that Lightning's DDP launcher can start the other processes with it
    main(list(args))


if __name__ == "__main__":
    main()
