"""Run a peer detector's ONNX file over one mosaic with SAHI's sliced prediction, as a user of Ultralytics and
SAHI would, and write its detections as map points. Runs in the peers' environment (torch, ultralytics, SAHI).

    .venv-peers/bin/python experiments/peers/score.py MOSAIC MODEL.onnx OUT.gpkg [--slice 512 --overlap 0.25]

SAHI reads the image, cuts ``--slice`` px slices with ``--overlap`` of each side shared (the same 512 px and
quarter-tile overlap as our 512 px card), runs Ultralytics' ONNX backend on each, shifts the boxes back and merges
them (GREEDYNMM on IOS, SAHI's default, which SAHI itself switches to NMS on IoU at thresholds as low as the
0.02 kept for the recall curve); no extra full-image pass. Each box's centre becomes a point in the
mosaic's CRS, with its score and class, in the layer ``candidates`` of a GeoPackage (as the scorer's, which
``ordnance evaluate`` reads). Prints one JSON line: seconds, megapixels, detections, peak RSS (MB), SAHI's own
time split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peak_rss_mb


def write_points(path: Path, xs, ys, scores, classes, crs_wkt: str) -> None:
    """The detections as the layer ``candidates`` of a GeoPackage (map points with score and class, the CRS kept
    even when there is no detection), written under a temporary name and renamed."""
    import pyogrio.raw
    import shapely

    tmp = path.with_name(f".{path.stem}.partial.gpkg")
    tmp.unlink(missing_ok=True)
    geometry = shapely.to_wkb(shapely.points(np.c_[xs, ys].reshape(-1, 2)))
    pyogrio.raw.write(tmp, geometry=np.asarray(geometry, dtype=object), field_data=[np.asarray(scores, float),
                      np.asarray(classes, dtype=object)], fields=["score", "class"], layer="candidates",
                      driver="GPKG", crs=crs_wkt, geometry_type="Point")  # fmt: skip
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mosaic", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--slice", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--threshold", type=float, default=0.02, help="lowest score kept (for the recall curve)")
    args = parser.parse_args(argv)
    import rasterio
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    with rasterio.open(args.mosaic) as src:
        transform, crs, megapixels = src.transform, src.crs, src.width * src.height / 1e6
    if crs is None or not crs.is_projected:
        sys.exit(f"{args.mosaic}: needs a projected CRS")
    start = time.perf_counter()
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics",
        model_path=str(args.model),
        confidence_threshold=args.threshold,
        device="cpu",
        image_size=args.slice,
    )
    result = get_sliced_prediction(
        str(args.mosaic),
        model,
        slice_height=args.slice,
        slice_width=args.slice,
        overlap_height_ratio=args.overlap,
        overlap_width_ratio=args.overlap,
        perform_standard_pred=False,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    xs, ys, scores, classes = [], [], [], []
    for p in result.object_prediction_list:
        box = p.bbox.to_xyxy()
        x, y = transform * ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        xs.append(x)
        ys.append(y)
        scores.append(p.score.value)
        classes.append(p.category.name)
    write_points(args.out, np.asarray(xs, float), np.asarray(ys, float), scores, classes, crs.to_wkt())
    print(json.dumps({"seconds": seconds, "megapixels": megapixels, "detections": len(xs),
                      "peak_rss_mb": peak_rss_mb(),
                      "durations_s": {k: round(v, 2) for k, v in result.durations_in_seconds.items()}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
