"""``ordnance evaluate PREDICTIONS TRUTH``: hazard-point metrics of a scoring run against truth: map units
for mosaics (truth points or polygons), pixels per frame for frame datasets (YOLO or COCO truth)."""

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
@click.option("--floor-px", type=float, default=4.0, show_default=True, help="Frames: smallest tolerance (px).")
@click.option("--frames", "frame_pattern", default=None, help="Frames: regex on file names, e.g. 'Zone_(7|9)_'.")
def evaluate(
    predictions,
    truth,
    out_dir,
    manifest,
    floor_m,
    size_factor,
    score_threshold,
    class_aware,
    area_ha,
    floor_px,
    frame_pattern,
):
    """Match PREDICTIONS to TRUTH.

    Mosaics: PREDICTIONS is the scorer's candidates.gpkg, GeoJSON or CSV and TRUTH a vector layer of points
    or polygons in a projected CRS. Frames: TRUTH is a YOLO data.yaml (or images folder) or a COCO
    annotation .json, and PREDICTIONS the scorer's candidates of those frames or a COCO results .json.
    """
    from ordnance.inference.evaluate import EvaluationSettings, evaluate_mosaic, markdown_table, plot_pr
    from ordnance.inference.frames import FrameSettings, evaluate_frames, frames_markdown, is_frame_truth
    from ordnance.inference.writers import write_json

    out_dir = out_dir or predictions.parent
    if is_frame_truth(truth):
        frame_settings = FrameSettings(
            floor_px=floor_px, size_factor=size_factor, score_threshold=score_threshold, class_aware=class_aware
        )
        report = evaluate_frames(predictions, truth, frame_settings, frame_pattern=frame_pattern)
        _write(out_dir, report, frames_markdown(report), plot_pr, write_json)
        return
    settings = EvaluationSettings(
        floor_m=floor_m, size_factor=size_factor, score_threshold=score_threshold, class_aware=class_aware
    )
    manifest = manifest or (predictions.parent / "manifest.json")
    report = evaluate_mosaic(
        predictions, truth, settings=settings, area_ha=area_ha, manifest=manifest if manifest.exists() else None
    )
    _write(out_dir, report, markdown_table(report), plot_pr, write_json)


def _write(out_dir: Path, report: dict, table: str, plot_pr, write_json) -> None:
    from ordnance.inference.writers import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "evaluation.json", report)
    with atomic_path(out_dir / "evaluation.md") as tmp:
        tmp.write_text(table)
    try:
        plot_pr(report, out_dir / "pr_curve.png")
    except ImportError:
        click.echo("matplotlib is not installed; no PR curve image", err=True)
    click.echo(table)
