"""Write synthetic data: YOLO tile datasets, and survey mosaics as tiled GeoTIFF with vector truth."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import shapely
from ordnance.datasets.synth.items import CATALOG
from ordnance.datasets.synth.layout import make_scene
from ordnance.datasets.synth.scene import SceneSpec, render_block
from ordnance.inference.grid import box_ioa
from tqdm import tqdm

log = logging.getLogger(__name__)

CLASS_NAMES = ("ap_mine", "at_mine", "uxo")


# Workers start from a fresh server process, never by forking the caller: a fork taken while ONNX Runtime,
# torch or GDAL threads hold locks can hang the child.
_CONTEXT = multiprocessing.get_context("forkserver")


def _tile(args):
    seed, tile_px, gsd_m, empty, min_visibility, lookalike_scale = args
    rng = np.random.default_rng(seed)
    spec = make_scene(seed, gsd_m, tile_px, tile_px, patterns=int(rng.integers(1, 4)), empty=empty)
    if lookalike_scale != 1.0:
        spec = replace(spec, lookalikes_per_m2=spec.lookalikes_per_m2 * lookalike_scale)
    image, boxes = render_block(spec, 0, 0, tile_px, tile_px)
    rows = []
    for x0, y0, x1, y1, cls, _, _ in boxes:
        if box_ioa(np.array([[x0, y0, x1, y1]]), (0, 0, tile_px, tile_px))[0] < min_visibility:
            continue
        x0, y0, x1, y1 = np.clip([x0, y0, x1, y1], 0, tile_px)
        rows.append(
            (
                CLASS_NAMES.index(cls),
                (x0 + x1) / 2 / tile_px,
                (y0 + y1) / 2 / tile_px,
                (x1 - x0) / tile_px,
                (y1 - y0) / tile_px,
            )
        )
    return image, rows


def write_tile_dataset(
    out_dir: Path,
    *,
    n_train: int,
    n_valid: int,
    tile_px: int = 512,
    gsd_m: float = 0.01,
    seed: int = 0,
    empty_ratio: float = 0.1,
    min_visibility: float = 0.5,
    workers: int = 0,
    train_lookalike_scale: float = 1.0,
) -> Path:
    """A YOLO dataset (Roboflow layout, ``data.yaml``) of independent synthetic scenes.

    Train and valid tiles come from disjoint seed ranges (different scenes), so nothing leaks.
    ``train_lookalike_scale`` multiplies the look-alike density of training scenes only (hard negatives);
    validation scenes are the generator's own, whatever the training set holds.

    Returns:
        Path of data.yaml.
    """
    out_dir = Path(out_dir)
    jobs = []
    if train_lookalike_scale <= 0:
        raise ValueError(f"train_lookalike_scale must be positive, got {train_lookalike_scale}")
    for split, count, base, scale in (
        ("train", n_train, 0, train_lookalike_scale),
        ("valid", n_valid, 10_000_000, 1.0),
    ):
        (out_dir / split / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            s = seed * 100_000_000 + base + i
            empty = np.random.default_rng(s + 1).random() < empty_ratio
            jobs.append((split, f"synth_{s:011d}", (s, tile_px, gsd_m, empty, min_visibility, scale)))
    todo = [j for j in jobs if not (out_dir / j[0] / "labels" / f"{j[1]}.txt").exists()]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, mp_context=_CONTEXT) as pool:
        results = pool.map(_tile, [j[2] for j in todo], chunksize=4)
        for (split, stem, _), (image, rows) in tqdm(
            zip(todo, results), total=len(todo), desc="tiles", initial=len(jobs) - len(todo), unit="tile"
        ):
            cv2.imwrite(
                str(out_dir / split / "images" / f"{stem}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            label = out_dir / split / "labels" / f"{stem}.txt"
            tmp = label.with_suffix(".tmp")
            tmp.write_text("".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows))
            os.replace(tmp, label)  # the label file marks the tile done (resume)
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(
        "path: .\ntrain: train/images\nval: valid/images\n"
        f"nc: {len(CLASS_NAMES)}\nnames: {list(CLASS_NAMES)}\n"
        f"# synthetic scenes: seed {seed}, tile {tile_px} px, GSD {gsd_m * 100:g} cm\n"
    )
    return data_yaml


def survey_scene(
    seed: int,
    width_px: int,
    height_px: int,
    gsd_m: float,
    patterns: int | None = None,
    biome: str | None = None,
    layouts: tuple[str, ...] | None = None,
) -> tuple[SceneSpec, shapely.Polygon]:
    """A survey scene and its flown footprint (pixels): an irregular polygon leaving a nodata collar.
    ``biome`` picks the terrain mix (``BIOMES``; default: drawn from the seed); ``layouts`` the layout patterns
    drawn from (``layout.PATTERNS``; default: all)."""
    rng = np.random.default_rng(seed + 12345)
    spec = make_scene(seed, gsd_m, width_px, height_px, patterns=patterns, biome=biome, layouts=layouts)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radius = 0.5 * (0.88 + rng.uniform(-0.05, 0.1, len(angles)))
    ring = np.c_[0.5 + radius * np.cos(angles) * 1.0, 0.5 + radius * np.sin(angles)]
    footprint = shapely.Polygon(np.clip(ring, 0.02, 0.98) * [width_px, height_px]).buffer(0)
    inside = [p for p in spec.items if footprint.buffer(-30).contains(shapely.Point(p.x_px, p.y_px))]
    return replace(spec, items=tuple(inside)), footprint


def _mosaic_block(args):
    spec, footprint, x0, y0, w, h = args
    image, _ = render_block(spec, x0, y0, w, h)
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w] + 0.5
    inside = shapely.contains_xy(footprint, xs.ravel(), ys.ravel()).reshape(h, w)
    image[~inside] = 0
    return x0, y0, image


def write_mosaic(
    path: Path,
    *,
    width_px: int,
    height_px: int,
    gsd_m: float = 0.01,
    seed: int = 0,
    epsg: int = 32636,
    origin_xy: tuple[float, float] = (411_000.0, 5_535_000.0),
    block_px: int = 1024,
    workers: int = 0,
    patterns: int | None = None,
    biome: str | None = None,
    layouts: tuple[str, ...] | None = None,
) -> dict[str, Path]:
    """Write a survey mosaic block by block (memory does not grow with size) and its truth points.

    Returns:
        {"mosaic": .tif, "truth_gpkg": .gpkg, "truth_geojson": .geojson}
    """
    import rasterio
    from ordnance.datasets.truth import write_truth
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = Path(path)
    spec, footprint = survey_scene(seed, width_px, height_px, gsd_m, patterns, biome, layouts)
    transform = from_origin(origin_xy[0], origin_xy[1], gsd_m, gsd_m)
    profile = dict(
        driver="GTiff",
        width=width_px,
        height=height_px,
        count=3,
        dtype="uint8",
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        predictor=2,
        BIGTIFF="IF_SAFER",
        photometric="RGB",
    )
    blocks = [
        (spec, footprint, x, y, min(block_px, width_px - x), min(block_px, height_px - y))
        for y in range(0, height_px, block_px)
        for x in range(0, width_px, block_px)
    ]
    tmp = path.with_name(f".{path.stem}.partial.tif")
    workers = workers or os.cpu_count() or 1
    with rasterio.open(tmp, "w", **profile) as dst, ProcessPoolExecutor(workers, mp_context=_CONTEXT) as pool:
        for x0, y0, image in tqdm(pool.map(_mosaic_block, blocks), total=len(blocks), desc=path.name, unit="block"):
            dst.write(image.transpose(2, 0, 1), window=Window(x0, y0, image.shape[1], image.shape[0]))
    os.replace(tmp, path)
    truth = write_truth(path.with_suffix(""), spec, transform, epsg)
    return {"mosaic": path, **truth}


def item_size_m(name: str) -> float:
    """Typical longest dimension of an item type, metres."""
    return float(np.mean(CATALOG[name].length_mm)) / 1000
