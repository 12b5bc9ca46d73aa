"""``ordnance report``: a self-contained HTML survey report of a scoring run, and its PDF."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--evaluation", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="evaluation.json from 'ordnance evaluate', shown in the report.")  # fmt: skip
@click.option("--pdf/--no-pdf", default=True, show_default=True, help="Also print report.pdf with headless Chromium.")
def report(out_dir: Path, evaluation: Path | None, pdf: bool) -> None:
    """Write OUT_DIR/report.html (one file, opens offline) and report.pdf for the scoring run in OUT_DIR: overview
    map with coverage, hazard areas and candidates; counts per class and status; hectares; model card, settings
    and the evaluation when given."""
    from ordnance.inference.report import build_report

    for path in build_report(out_dir, evaluation=evaluation, pdf=pdf):
        click.echo(path)
