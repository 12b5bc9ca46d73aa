"""Run a peer detector's ONNX file over one mosaic with SAHI's sliced prediction, as a user of Ultralytics and
SAHI would, and write its detections as map points. Runs in the peers' environment (torch, ultralytics, SAHI).

    .venv-peers/bin/python experiments/peers/score.py MOSAIC MODEL.onnx OUT.csv [--slice 512 --overlap 0.25]

SAHI reads the image, cuts ``--slice`` px slices with ``--overlap`` of each side shared (the same 512 px and
quarter-tile overlap as our 512 px card), runs Ultralytics' ONNX backend on each, shifts the boxes back and merges
them (GREEDYNMM on IOS, SAHI's default); no extra full-image pass. Each box's centre becomes a point in the
mosaic's CRS (x, y, crs, score, class: the columns of the scorer's candidates.csv, which ``ordnance evaluate``
reads). Prints one JSON line: seconds, megapixels, detections, peak RSS (MB), SAHI's own time split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peak_rss_mb


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
    rows = []
    for p in result.object_prediction_list:
        box = p.bbox.to_xyxy()
        col, row = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x, y = transform * (col, row)
        rows.append({"x": x, "y": y, "crs": crs.to_string(), "score": p.score.value, "class": p.category.name})
    tmp = args.out.with_suffix(".partial.csv")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["x", "y", "crs", "score", "class"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, args.out)
    print(json.dumps({"seconds": seconds, "megapixels": megapixels, "detections": len(rows),
                      "peak_rss_mb": peak_rss_mb(),
                      "durations_s": {k: round(v, 2) for k, v in result.durations_in_seconds.items()}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
