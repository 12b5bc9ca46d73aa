"""``ordnance review``: the offline review page of a scoring run, and merging decisions back."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("review")
def review() -> None:
    """Offline review of candidates: build the page, then import the reviewer's decisions."""


@review.command("build")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--chip-px", type=click.IntRange(16, 1024), default=96, show_default=True, help="Chip image side.")
@click.option(
    "--order",
    type=click.Choice(["score", "informative"]),
    default="score",
    show_default=True,
    help="First list order: by score, or the decisions that teach a fine-tune most first (scores nearest the "
    "model's operating threshold). The page can switch.",
)
@click.option(
    "--chip-floor",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Candidates scoring below this get no image chip (listed and marked on the overview). "
    "Default: half the model card's operating threshold; 0: a chip for every candidate.",
)
def build(out_dir: Path, chip_px: int, order: str, chip_floor: float | None) -> None:
    """Write OUT_DIR/review.html (self-contained, opens offline) for the scoring run in OUT_DIR."""
    from ordnance.inference.review import build_review

    click.echo(build_review(out_dir, chip_px=chip_px, order=order, chip_floor=chip_floor))


@review.command("import")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.argument("decisions", type=click.Path(path_type=Path))
def import_(out_dir: Path, decisions: Path) -> None:
    """Merge an exported DECISIONS file (GeoJSON or CSV) into OUT_DIR/candidates.gpkg."""
    from ordnance.inference.review import merge_decisions

    counts = merge_decisions(out_dir, decisions)
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
