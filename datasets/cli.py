"""``ordnance synth``: synthetic tile datasets, survey mosaics and contact sheets."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import click

# datasets.synth.layout.PATTERNS, named here so that the command line loads without the generator
LAYOUTS = ("at_row", "ap_cluster", "pfm_ellipse", "submunitions", "isolated_uxo")


@click.group("synth")
def synth() -> None:
    """Seeded synthetic aerial scenes with ordnance, look-alikes and camera effects."""


@synth.command("tiles")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--n-train", type=int, default=1600, show_default=True)
@click.option("--n-valid", type=int, default=200, show_default=True)
@click.option("--tile-px", type=int, default=512, show_default=True)
@click.option("--gsd-cm", type=float, default=1.0, show_default=True, help="Ground sample distance, cm/pixel.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--empty-ratio", type=float, default=0.1, show_default=True, help="Share of tiles without items.")
@click.option(
    "--train-lookalike-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Look-alike density of training scenes relative to validation scenes (hard negatives).",
)
@click.option("--coco", is_flag=True, help="Also write COCO JSON per split (for CVAT or FiftyOne).")
@click.option("--preview", is_flag=True, help="Also write preview.png, a contact sheet with boxes.")
def tiles(out_dir, n_train, n_valid, tile_px, gsd_cm, seed, empty_ratio, train_lookalike_scale, coco, preview) -> None:
    """Write a YOLO tile dataset (data.yaml, train/ and valid/) to OUT_DIR; re-running resumes."""
    from ordnance.datasets.synth.writers import write_tile_dataset
    from ordnance.datasets.yolo import read_yolo

    data_yaml = write_tile_dataset(
        out_dir,
        n_train=n_train,
        n_valid=n_valid,
        tile_px=tile_px,
        gsd_m=gsd_cm / 100,
        seed=seed,
        empty_ratio=empty_ratio,
        train_lookalike_scale=train_lookalike_scale,
    )
    click.echo(f"{data_yaml}")
    if coco:
        from ordnance.datasets.coco import write_coco

        for split in ("train", "valid"):
            click.echo(write_coco(read_yolo(data_yaml, split), out_dir / f"{split}.coco.json", image_root=out_dir))
    if preview:
        from ordnance.datasets.preview import preview_dataset

        click.echo(preview_dataset(read_yolo(data_yaml, "valid"), out_dir / "preview.png"))


@synth.command("mosaic")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--width", type=int, default=20000, show_default=True, help="Pixels.")
@click.option("--height", type=int, default=None, help="Pixels (default: width).")
@click.option("--gsd-cm", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epsg", type=int, default=32636, show_default=True, help="Projected CRS (a UTM zone).")
@click.option("--workers", type=int, default=0, help="Processes (default: one per core).")
@click.option(
    "--biome",
    type=click.Choice(["meadow", "steppe", "farmland", "arid", "roadside"]),
    default=None,
    help="Terrain mix (default: drawn from the seed).",
)
@click.option("--patterns", type=click.IntRange(min=1), default=None, help="Layout patterns (default: one per 0.1 ha).")
@click.option(
    "--layouts",
    type=click.Choice(list(LAYOUTS)),
    multiple=True,
    help="Layout patterns to draw from, repeatable (default: all).",
)
def mosaic(output, width, height, gsd_cm, seed, epsg, workers, biome, patterns, layouts) -> None:
    """Write a survey mosaic OUTPUT (tiled, compressed GeoTIFF with a nodata collar) and its truth points
    (OUTPUT_truth.gpkg, OUTPUT_truth.geojson)."""
    from ordnance.datasets.synth.writers import write_mosaic

    start = time.perf_counter()
    paths = write_mosaic(
        output,
        width_px=width,
        height_px=height or width,
        gsd_m=gsd_cm / 100,
        seed=seed,
        epsg=epsg,
        workers=workers,
        biome=biome,
        patterns=patterns,
        layouts=tuple(layouts) or None,
    )
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    stats = {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb_per_process": round(peak / 1024, 1)}
    click.echo(json.dumps({k: str(v) for k, v in paths.items()} | stats))


@synth.command("preview")
@click.argument("data_yaml", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="PNG (default: beside data).")
@click.option("--split", default="valid", show_default=True)
@click.option("-n", type=int, default=16, show_default=True)
def preview(data_yaml, output, split, n) -> None:
    """Contact sheet of any YOLO export (synthetic or real) with its boxes drawn."""
    from ordnance.datasets.preview import preview_dataset
    from ordnance.datasets.yolo import read_yolo

    data = read_yolo(data_yaml, split)
    click.echo(preview_dataset(data, output or Path(data_yaml).parent / f"preview_{split}.png", n=n))
