"""Scorer benchmark: end-to-end megapixels per second against the bare ONNX Runtime loop over the same
tiles with the same model, and peak RSS on mosaics of two sizes.

    python experiments/scoring/run.py --model model.onnx            # throughput with a trained model
    python experiments/scoring/run.py --rss-sizes 10000 40000       # memory against mosaic size

Writes experiments/scoring/results.json and results.md. Mosaics are generated on demand under
experiments/scoring/data/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent))
from common import tiled_mosaic  # noqa: E402


def scored_rss(mosaic: Path, model: Path, out: Path) -> dict:
    """Run `ordnance score` in a child process; its peak RSS (VmHWM, which starts afresh at exec, unlike
    getrusage's maxrss that a forked child inherits from this process) and wall time."""
    start = time.perf_counter()
    code = (
        "import resource, sys, json; from ordnance.inference.scoring import ScoringJob, score; "
        f"r = score(ScoringJob(inputs=({str(mosaic)!r},), model={str(model)!r}, out_dir={str(out)!r}, "
        "progress=False, resume=False)); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print(json.dumps({'rss_mb': int(hwm) / 1024, "
        "'candidates': r.manifest['candidates'], 'tiles': r.manifest['tiles'], 'timings': r.manifest['timings']}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["wall_s"] = time.perf_counter() - start
    return report


def bare_loop(mosaic: Path, model: Path) -> dict:
    """ONNX Runtime alone over the same tiles (read beforehand; no reading, merging or writing timed)."""
    from ordnance.inference.grid import tile_grid
    from ordnance.inference.raster import open_raster, read_tile
    from ordnance.inference.session import open_session

    detector = open_session(model)
    card = detector.card
    with open_raster(mosaic) as ds:
        tiles = tile_grid(ds.width, ds.height, card.tile_size_px, card.overlap_px)
        read = [read_tile(ds, t, card, None, card.tile_size_px) for t in tiles]
        images = np.stack([image for image, valid in read if valid.any()])  # the scorer skips empty windows too
        megapixels = ds.width * ds.height / 1e6
    batch = detector.fixed_batch or 1
    detector.run(images[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images) - batch + 1, batch):
        detector.run(images[i : i + batch])
    seconds = time.perf_counter() - start
    return {
        "tiles": len(images),
        "seconds": seconds,
        "mp_per_s": megapixels / seconds,
        "ms_per_tile": seconds / len(images) * 1000,
    }


def throughput(model: Path, size_px: int) -> dict:
    from ordnance.datasets.synth.writers import write_mosaic

    mosaic = DATA / f"survey_{size_px}.tif"
    if not mosaic.exists():
        write_mosaic(mosaic, width_px=size_px, height_px=size_px, seed=11)
    bare = bare_loop(mosaic, model)
    scored = scored_rss(mosaic, model, DATA / f"out_{size_px}")
    megapixels = size_px**2 / 1e6
    scorer_mp_s = megapixels / scored["timings"]["total_s"]
    return {
        "mosaic_px": size_px,
        "megapixels": megapixels,
        "bare_loop": bare,
        "scorer": scored,
        "scorer_mp_per_s": scorer_mp_s,
        "ratio_to_bare": scorer_mp_s / bare["mp_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Trained ONNX model for the throughput run.")
    parser.add_argument("--size", type=int, default=6000, help="Throughput mosaic side (px).")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[10000, 40000])
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    previous = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").exists() else {}
    results: dict = previous | {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.model:
        results["throughput"] = throughput(args.model, args.size)
    if args.rss_sizes:
        from ordnance.inference.card import ModelCard
        from ordnance.training.blobnet import blob_model_bytes

        card = ModelCard(
            class_names=("ap_mine",),
            tile_size_px=512,
            gsd_m=0.01,
            overlap_px=64,
            score_threshold=0.97,
            model_name="blobnet",
        )
        blob = DATA / "blob512.onnx"
        blob.write_bytes(blob_model_bytes(512, card=card))
        results["rss"] = []
        for size in args.rss_sizes:
            mosaic = tiled_mosaic(DATA / f"tiled_{size}.tif", size)
            results["rss"].append({"mosaic_px": size, **scored_rss(mosaic, blob, DATA / f"rss_out_{size}")})
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    (HERE / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; {results['date']}.", ""]
    if "throughput" in results:
        t = results["throughput"]
        lines += [
            "| run | MP/s | ms/tile | tiles | ratio to bare loop |",
            "| --- | --- | --- | --- | --- |",
            f"| bare ONNX Runtime loop | {t['bare_loop']['mp_per_s']:.2f} | {t['bare_loop']['ms_per_tile']:.0f} | "
            f"{t['bare_loop']['tiles']} | 1.00 |",
            f"| ordnance score (read, infer, merge, write) | {t['scorer_mp_per_s']:.2f} | "
            f"{t['scorer']['timings']['total_s'] / t['scorer']['tiles'] * 1000:.0f} | {t['scorer']['tiles']} | "
            f"{t['ratio_to_bare']:.2f} |",
            "",
        ]
    if "rss" in results:
        lines += ["| mosaic | tiles | peak RSS (MB) | candidates | wall (s) |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {r['mosaic_px']}² px | {r['tiles']} | {r['rss_mb']:.0f} | {r['candidates']} | {r['wall_s']:.0f} |"
            for r in results["rss"]
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
