"""Throughput and memory: one ONNX model over one mosaic through `ordnance score`, SAHI's sliced prediction
(the model wrapped as a SAHI DetectionModel) and a naive whole-image loop, each in its own process; plus the
model's GFLOPs per tile, the achieved GFLOP/s against ONNX Runtime's own large float32 matmul, and int8
against fp32 speed.

    make bench-throughput                       # = .venv/bin/python experiments/throughput/run.py
    .venv/bin/python experiments/throughput/run.py --size 12000 --model experiments/models/synthetic.onnx

The methods run the deployable file, by default the int8 export that passed the export's recall gate
(`ordnance export ... --int8`); `--fp32-model` is timed beside it per tile. With the float32 file the three
methods take about 25 minutes at 20,000² px on 2 cores.

Needs the bench venv (`make bench-setup`, SAHI without torch) and an exported model (README: train, export).
Writes results.json and results.md here; the mosaic is generated under data/ (not committed).
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
REPO = HERE.parents[1]
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import tiled_mosaic  # noqa: E402
from flops import bare_ms_per_tile, graph_gflops, matmul_gflops_per_s  # noqa: E402

BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
METHODS = ("ordnance", "sahi", "naive")


def run_method(method: str, mosaic: Path, model: Path, threads: int) -> dict:
    out = DATA / f"out_{method}"
    command = [str(BENCH_PYTHON), str(HERE / "methods.py"), method, str(mosaic), str(model), str(out), str(threads)]
    print(f"[{time.strftime('%H:%M:%S')}] {method} ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if method == "ordnance":
        report["timings"] = json.loads((out / "manifest.json").read_text())["timings"]
    print(f"  {report['seconds']:.0f} s, {report['rss_mb']:.0f} MB", flush=True)
    return report


def sample_tiles(mosaic: Path, side: int, n: int) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    with rasterio.open(mosaic) as src:
        xs = rng.integers(0, src.width - side, n)
        ys = rng.integers(0, src.height - side, n)
        return np.stack([src.read(window=Window(int(x), int(y), side, side)) for x, y in zip(xs, ys)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, default=REPO / "experiments/models/synthetic.int8.onnx", help="Run by every method."
    )
    parser.add_argument(
        "--fp32-model",
        type=Path,
        default=REPO / "experiments/models/synthetic.onnx",
        help="Timed per tile against --model when present.",
    )
    parser.add_argument("--size", type=int, default=20000, help="Mosaic side, px (1 cm GSD).")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sample-tiles", type=int, default=24, help="Tiles for the fp32/int8 timing.")
    args = parser.parse_args()
    if not args.model.exists():
        raise SystemExit(
            f"{args.model}: model does not exist; export one first (README: train, then ordnance export --int8), "
            "or pass --model with the float32 file"
        )
    if not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON}: bench venv missing; run `make bench-setup`")
    DATA.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mosaic = tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
    print(f"mosaic {mosaic} ready in {time.perf_counter() - start:.0f} s", flush=True)

    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "mosaic_px": args.size,
        "gsd_m": 0.01,
        "model": args.model.name,
        "threads": args.threads,
        "methods": {},
    }
    for method in args.methods:
        report = run_method(method, mosaic, args.model, args.threads)
        report["mp_per_s"] = report["megapixels"] / report["seconds"]
        report["ha_per_h"] = report["megapixels"] * 1e6 * results["gsd_m"] ** 2 / 1e4 / (report["seconds"] / 3600)
        results["methods"][method] = report
    ours = results["methods"].get("ordnance")
    if ours:
        for report in results["methods"].values():
            report["ours_speedup"] = ours["mp_per_s"] / report["mp_per_s"]
            report["ours_rss_fraction"] = ours["rss_mb"] / report["rss_mb"]

    from ordnance.inference.card import read_card

    side = read_card(args.model).tile_size_px
    tiles = sample_tiles(mosaic, side, args.sample_tiles)
    compute = graph_gflops(args.model)
    ceiling = matmul_gflops_per_s(args.threads)
    ms = bare_ms_per_tile(args.model, tiles, args.threads)
    results["compute"] = {
        **compute,
        "tile_px": side,
        "ort_matmul_gflops_per_s": ceiling,
        "ms_per_tile": ms,
        "gflops_per_s": compute["gflops_per_tile"] / ms * 1000,
    }
    if args.fp32_model.exists() and args.fp32_model != args.model:
        fp32_ms = bare_ms_per_tile(args.fp32_model, tiles, args.threads)
        results["compute"] |= {
            "fp32_model": args.fp32_model.name,
            "fp32_ms_per_tile": fp32_ms,
            "fp32_gflops_per_s": compute["gflops_per_tile"] / fp32_ms * 1000,
            "speedup_over_fp32": fp32_ms / ms,
        }
    results["wall_s"] = time.perf_counter() - start
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    (HERE / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    c = r["compute"]
    lines = [
        f"{r['mosaic_px']:,}² px mosaic at {r['gsd_m'] * 100:g} cm GSD, model `{r['model']}`, "
        f"{r['threads']} ONNX Runtime threads; {r['machine']}; {r['date']}.",
        "",
        "| method | wall (s) | MP/s | ha/h | peak RSS (MB) | detections | ours: speed x | ours: RSS fraction |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"ordnance": "`ordnance score`", "sahi": "SAHI sliced prediction", "naive": "naive whole-image loop"}
    for method, m in r["methods"].items():
        lines.append(
            f"| {names[method]} | {m['seconds']:.0f} | {m['mp_per_s']:.2f} | {m['ha_per_h']:.1f} | "
            f"{m['rss_mb']:.0f} | {m['detections']} | {m.get('ours_speedup', float('nan')):.2f} | "
            f"{m.get('ours_rss_fraction', float('nan')):.2f} |"
        )
    lines += [
        "",
        "| compute | value |",
        "| --- | --- |",
        f"| GFLOPs per {c['tile_px']} px tile (conv/matmul) | {c['gflops_per_tile']:.1f} |",
        f"| ONNX Runtime float32 matmul 2048² (ceiling) | {c['ort_matmul_gflops_per_s']:.0f} GFLOP/s |",
        f"| the model, bare ORT, batch 1 | {c['ms_per_tile']:.0f} ms/tile = {c['gflops_per_s']:.0f} GFLOP/s "
        f"({c['gflops_per_s'] / c['ort_matmul_gflops_per_s']:.0%} of the ceiling) |",
    ]
    if "fp32_ms_per_tile" in c:
        lines.append(
            f"| `{c['fp32_model']}`, bare ORT, batch 1 | {c['fp32_ms_per_tile']:.0f} ms/tile = "
            f"{c['fp32_gflops_per_s']:.0f} GFLOP/s; `{r['model']}` is {c['speedup_over_fp32']:.2f}x faster |"
        )
    ours = r["methods"].get("ordnance")
    if ours and "timings" in ours:
        t = ours["timings"]
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items() if k != "total_s")
        lines += ["", f"`ordnance score` time split: {parts} (total {t['total_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
