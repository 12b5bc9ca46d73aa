"""``ordnance evaluate PREDICTIONS TRUTH``: hazard-point metrics of a scoring run against truth."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("evaluate")
@click.argument("predictions", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for evaluation.json, evaluation.md and pr_curve.png (default: beside PREDICTIONS).",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="The run's manifest.json, for seam statistics (default: beside PREDICTIONS).",
)
@click.option("--floor-m", type=float, default=0.25, show_default=True, help="Smallest match tolerance (m).")
@click.option("--size-factor", type=float, default=0.5, show_default=True, help="Tolerance = factor x item size.")
@click.option("--score-threshold", type=float, default=None, help="Operating point (default: all candidates).")
@click.option("--class-aware", is_flag=True, help="Only same-class predictions count as hits.")
@click.option("--area-ha", type=float, default=None, help="Scanned area when PREDICTIONS has no coverage layer.")
def evaluate(predictions, truth, out_dir, manifest, floor_m, size_factor, score_threshold, class_aware, area_ha):
    """Match PREDICTIONS (the scorer's candidates.gpkg, GeoJSON or CSV) to TRUTH points or polygons."""
    from ordnance.inference.evaluate import EvaluationSettings, evaluate_mosaic, markdown_table, plot_pr
    from ordnance.inference.writers import write_json

    settings = EvaluationSettings(
        floor_m=floor_m, size_factor=size_factor, score_threshold=score_threshold, class_aware=class_aware
    )
    manifest = manifest or (predictions.parent / "manifest.json")
    report = evaluate_mosaic(
        predictions, truth, settings=settings, area_ha=area_ha, manifest=manifest if manifest.exists() else None
    )
    out_dir = out_dir or predictions.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "evaluation.json", report)
    table = markdown_table(report)
    (out_dir / "evaluation.md").write_text(table)
    try:
        plot_pr(report, out_dir / "pr_curve.png")
    except ImportError:
        click.echo("matplotlib is not installed; no PR curve image", err=True)
    click.echo(table)
