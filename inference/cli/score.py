"""``ordnance score``: candidate hazard points from mosaics or frames, with an exported ONNX model."""

from __future__ import annotations

from pathlib import Path

import click
from ordnance.inference.merge import MergeSettings
from ordnance.inference.writers import FORMATS


@click.command("score")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "model", required=True, type=click.Path(path_type=Path), help="Exported .onnx file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(FORMATS),
    default=FORMATS,
    show_default=True,
    help="Output formats (repeat).",
)
@click.option("--score-threshold", type=float, default=None, help="Override the card's operating point.")
@click.option("--overlap-px", type=int, default=None, help="Override the card's tile overlap (model px).")
@click.option("--batch-size", type=int, default=0, show_default=True, help="Tiles per call; 0 = graph's.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime threads; 0 = all cores.")
@click.option(
    "--gsd-tolerance",
    type=float,
    default=0.15,
    show_default=True,
    help="Relative GSD difference beyond which windows are resampled to the model's GSD.",
)
@click.option(
    "--input-gsd-m",
    type=float,
    default=None,
    help="Metres per pixel of inputs without georeferencing (frames), to resample them to the model's GSD "
    "(overrides the GSD derived from a photo's height and camera tags).",
)
@click.option(
    "--ground-altitude-m",
    type=float,
    default=None,
    help="Ground altitude above sea level (m) for photos whose height comes from EXIF GPSAltitude (photos with "
    "DJI's RelativeAltitude do not need it); places candidates on the ground from the camera's pose.",
)
@click.option(
    "--merge-ios",
    type=float,
    default=0.5,
    show_default=True,
    help="Seam merge: intersection over the smaller box that makes two detections one.",
)
@click.option(
    "--merge-per-class",
    is_flag=True,
    help="Seam merge only detections of one class (default: one object seen as two classes is one candidate, "
    "with its best class in 'class' and the others in 'also_seen_as').",
)
@click.option(
    "--cluster",
    default=None,
    metavar="auto|HOST:PORT|ray://HOST:PORT",
    help="Score the windows on a Ray cluster (pip install 'ordnance[cluster]'): 'auto' joins the cluster "
    "'ray start' runs on this machine, or starts one here; every worker must reach the inputs.",
)
@click.option("--workers", type=int, default=0, show_default=True, help="Ray workers; 0 = one per node.")
@click.option(
    "--sessions",
    type=int,
    default=1,
    show_default=True,
    help="ONNX Runtime sessions side by side in this process, each with THREADS/SESSIONS threads.",
)
@click.option(
    "--readers",
    type=int,
    default=0,
    show_default=True,
    help="Reader threads per input decoding windows ahead of the network; 0 = 1 on the CPU, 4 on a GPU.",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="Float16 engine (with --device tensorrt); the export's parity gate checked the float32 graph only.",
)
@click.option("--no-resume", is_flag=True, help="Ignore a checkpoint of an earlier interrupted run.")
@click.option("--max-tiles", type=int, default=None, help="Stop after N windows (resume later).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--review/--no-review", default=True, show_default=True, help="Write the offline review page too.")
@click.option(
    "--review-preview/--no-review-preview",
    default=True,
    show_default=True,
    help="Cut the review page's overview and chips from the windows as they are scored (review_preview.npz), "
    "so that 'ordnance review build' need not read the inputs again.",
)
@click.option(
    "--areas",
    is_flag=True,
    help="Also propose hazard areas with the default rules (see 'ordnance areas'); needs georeferenced inputs.",
)
def score(
    inputs,
    model,
    out_dir,
    formats,
    score_threshold,
    overlap_px,
    batch_size,
    device,
    threads,
    gsd_tolerance,
    input_gsd_m,
    ground_altitude_m,
    merge_ios,
    merge_per_class,
    cluster,
    workers,
    sessions,
    readers,
    fp16,
    no_resume,
    max_tiles,
    no_progress,
    review,
    review_preview,
    areas,
) -> None:
    """Score INPUT mosaics (GeoTIFF, COG, BigTIFF), JPEG/PNG frames, folders, globs or URLs (https://, s3://).

    Writes candidates.gpkg (layers candidates and coverage), candidates.geojson (EPSG:4326),
    candidates.csv, candidates.kml, manifest.json and the offline review page review.html to OUT. A killed
    run resumes when run again with the same arguments.
    """
    from ordnance.inference.scoring import ScoringJob
    from ordnance.inference.scoring import score as run

    job = ScoringJob(
        inputs=tuple(inputs),
        model=model,
        out_dir=out_dir,
        formats=tuple(formats),
        score_threshold=score_threshold,
        overlap_px=overlap_px,
        batch_size=batch_size,
        device=device,
        threads=threads,
        gsd_tolerance=gsd_tolerance,
        input_gsd_m=input_gsd_m,
        ground_altitude_m=ground_altitude_m,
        merge=MergeSettings(ios_min=merge_ios, class_aware=merge_per_class),
        resume=not no_resume,
        max_tiles=max_tiles,
        progress=not no_progress,
        cluster=cluster,
        workers=workers,
        sessions=sessions,
        readers=readers,
        fp16=fp16,
        review_preview=review_preview,
    )
    result = run(job)
    if not result.complete:
        click.echo(f"stopped after {max_tiles} windows; run the same command again to continue", err=True)
        return
    manifest = result.manifest
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(manifest["counts"].items())) or "none"
    mp_s = manifest["megapixels"] / max(manifest["timings"]["total_s"], 1e-9)
    click.echo(
        f"{manifest['candidates']} candidates ({counts}) over {manifest['area_scanned_ha']:.3f} ha, {mp_s:.2f} MP/s"
    )
    if manifest["settings"].get("device_fallback"):
        click.echo(f"warning: {manifest['settings']['device_fallback']}", err=True)
    if review and "gpkg" in result.outputs:
        from ordnance.inference.review import build_review

        result.outputs["review"] = build_review(out_dir)
    if areas and "gpkg" in result.outputs:
        from ordnance.inference.areas import derive_run_areas

        summary = derive_run_areas(out_dir)
        click.echo(f"{summary['areas']} proposed hazard areas ({summary.get('area_ha', 0.0):.3f} ha)")
        result.outputs["hazard_areas"] = Path(out_dir) / "hazard_areas.geojson"
    for name, path in result.outputs.items():
        click.echo(f"  {name}: {path}")
