"""``ordnance train fit|validate|test|predict --config configs/<recipe>.yaml`` through LightningCLI."""

from __future__ import annotations

import sys

import click
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from ordnance.datasets.datamodule import DetectionDataModule
from ordnance.training.task import DetectionTask
from ordnance.training.tracking import LogConfig, MLflowArtifacts, OrdnanceMLFlowLogger


def trainer_defaults() -> dict:
    return {
        "logger": lazy_instance(OrdnanceMLFlowLogger),
        "callbacks": [
            ModelCheckpoint(
                monitor=DetectionTask.monitor, mode=DetectionTask.mode, save_last=True, filename="best-{epoch:03d}"
            ),
            LearningRateMonitor(logging_interval="step"),
            MLflowArtifacts(),
        ],
        "default_root_dir": "runs",
    }


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Entry point; tests call it with an argument list."""
    return LightningCLI(
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
    sys.argv = ["ordnance train", *args]
    main()


if __name__ == "__main__":
    main()
