"""The `ordnance` click group.

Subcommands are registered as entry points in the group ``ordnance.subcommands`` (see pyproject.toml) and
are loaded only when called, so ``ordnance score --help`` never imports torch, while ``ordnance train``
can. A subcommand whose extra is not installed is still listed and explains what to install.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points, version

import click
from ordnance.inference.errors import OrdnanceError

_GROUP = "ordnance.subcommands"


def _broken_command(name: str, error: Exception) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def broken() -> None:
        raise click.ClickException(
            f"'ordnance {name}' cannot load ({type(error).__name__}: {error}); "
            "it needs the training stack: pip install 'ordnance[train]'"
        )

    broken.help = f"(unavailable: {error}) Install 'ordnance[train]'."
    broken.short_help = "(unavailable: install 'ordnance[train]')"
    return broken


class EntryPointGroup(click.Group):
    """A click group whose commands come from entry points, loaded lazily."""

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._entry_points().get(cmd_name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as error:
            return _broken_command(cmd_name, error)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OrdnanceError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:  # a read-only folder, a full disk: the file and the system's reason, in one line
            if error.strerror is None:
                raise
            where = error.filename2 or error.filename
            raise click.ClickException(f"{where}: {error.strerror}" if where else error.strerror) from None


@click.group(cls=EntryPointGroup)
@click.version_option(version("ordnance"), "--version", prog_name="ordnance")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Find landmines and unexploded ordnance in drone imagery.

    ML engineers train and export detectors (synth, train, export); survey analysts and field tablets
    score imagery with the exported ONNX file (score, evaluate).
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)  # library warnings become one log line, without their source lines
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
