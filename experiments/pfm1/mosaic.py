"""Lay one flight's tiles into a georeferenced GeoTIFF at the measured GSD, with point truth.

The tiles of a flight are placed side by side on a grid (row-major in file-name order) in UTM zone 18N (the
Binghamton fields lie at about 75.9 W), at ``source_gsd_m`` from gsd.json. Cells that hold no tile are masked
(GDAL per-dataset mask), so the scorer skips them and they count as no scanned area. With ``--mask-fill`` the
orthophotos' own fill (flat white beyond each photographed footprint, flat black blocks masked out of the tiles;
``ordnance.datasets.composite.fill_regions``) is masked too, as a photogrammetry tool marks no data in the
orthomosaics analysts score: no ground lies there to be searched or counted. Truth: one point per box
centre, class mapped onto the project's classes, ``size_m`` the box's longest side on the ground.

    .venv/bin/python experiments/pfm1/mosaic.py [--split test] [--out experiments/pfm1/data/pfm1_test.tif]
    .venv/bin/python experiments/pfm1/mosaic.py --mask-fill      # experiments/pfm1/data/pfm1_test_masked.tif
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import rasterio
from common import HERE, read_split
from ordnance.datasets.composite import fill_regions
from ordnance.datasets.records import load_record
from ordnance.datasets.truth import write_truth_points
from ordnance.inference.writers import atomic_path
from rasterio.transform import from_origin

EPSG = 32618
ORIGIN = (420000.0, 4665000.0)


def build(split: str, out: Path, gsd_m: float, mask_fill: bool = False) -> dict:
    data = read_split(split)
    samples = [load_record(r) for r in data.records]
    tile_h = max(s.image.shape[0] for s in samples)
    tile_w = max(s.image.shape[1] for s in samples)
    n_cols = math.ceil(math.sqrt(len(samples)))
    n_rows = math.ceil(len(samples) / n_cols)
    height, width = n_rows * tile_h, n_cols * tile_w
    transform = from_origin(*ORIGIN, gsd_m, gsd_m)
    cols, rows, classes, sizes, placed = [], [], [], [], []
    fill_px = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=f"EPSG:{EPSG}",
        transform=transform,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    with atomic_path(out) as tmp:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as dst:
            mask = np.zeros((height, width), np.uint8)
            for index, sample in enumerate(samples):
                r, c = divmod(index, n_cols)
                top, left = r * tile_h, c * tile_w
                h, w = sample.image.shape[:2]
                window = rasterio.windows.Window(left, top, w, h)
                dst.write(sample.image.transpose(2, 0, 1), window=window)
                mask[top : top + h, left : left + w] = 255
                if mask_fill:
                    fill = fill_regions(sample.image)
                    mask[top : top + h, left : left + w][fill] = 0
                    fill_px += int(fill.sum())
                placed.append(
                    {"source": Path(sample.source).name, "col_off": left, "row_off": top, "width": w, "height": h}
                )
                for (x0, y0, x1, y1), label in zip(sample.boxes, sample.labels):
                    cols.append(left + (x0 + x1) / 2)
                    rows.append(top + (y0 + y1) / 2)
                    classes.append(data.class_names[int(label)])
                    sizes.append(max(x1 - x0, y1 - y0) * gsd_m)
            dst.write_mask(mask)
    truth = write_truth_points(
        out.with_suffix(""),
        cols=np.array(cols),
        rows=np.array(rows),
        classes=classes,
        sizes_m=sizes,
        transform=transform,
        epsg=EPSG,
    )
    area_ha = (sum(p["width"] * p["height"] for p in placed) - fill_px) * gsd_m**2 / 1e4
    info = {
        "mosaic": str(out),
        **{k: str(v) for k, v in truth.items()},
        "split": split,
        "gsd_m": gsd_m,
        "epsg": EPSG,
        "tiles": len(samples),
        "items": len(cols),
        "area_ha": area_ha,
        "fill_masked": mask_fill,
        "fill_ha": fill_px * gsd_m**2 / 1e4,
        "size_px": [width, height],
        "placement": placed,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--gsd-m", type=float, default=None, help="default: source_gsd_m of gsd.json")
    parser.add_argument("--mask-fill", action="store_true", help="mask the orthophotos' fill as no data too")
    args = parser.parse_args(argv)
    gsd_m = args.gsd_m or json.loads((HERE / "gsd.json").read_text())["source_gsd_m"]
    out = args.out or HERE / "data" / f"pfm1_{args.split}{'_masked' if args.mask_fill else ''}.tif"
    info = build(args.split, out, gsd_m, args.mask_fill)
    print(f"{out}: {info['tiles']} tiles, {info['items']} items, {info['area_ha']:.4f} ha at {gsd_m * 1000:.2f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
