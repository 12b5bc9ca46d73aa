"""One ONNX Runtime session of all the threads against several sessions of fewer threads in one `ordnance score`.

Each run is a fresh `ordnance score` on the idle machine (`--threads` all cores, `--sessions 1` then 2, for each
model file given), timed end to end; the candidates of every run are compared with the first run's of the same
file. Writes sessions.json and sessions.md here and the README block.

    .venv/bin/python experiments/throughput/sessions.py --mosaic experiments/tiles/data/tiled_20000.tif \\
        --crop 12000 experiments/tiles/data/model_512.int8.onnx experiments/tiles/data/model_512.onnx
    .venv/bin/python experiments/throughput/sessions.py --report
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from common import tiled_mosaic, write_readme_block  # noqa: E402

BIN = Path(sys.executable).absolute().parent
DATA = HERE / "data"
RESULTS = HERE / "sessions.json"


def crop(mosaic: Path, side: int) -> Path:
    """The top-left ``side`` px square of the mosaic, as its own tiled GeoTIFF (made once)."""
    import rasterio
    from rasterio.windows import Window

    out = DATA / f"{mosaic.stem}_crop{side}.tif"
    if out.exists():
        return out
    with rasterio.open(mosaic) as src:
        window = Window(0, 0, side, side)
        profile = src.profile | {"width": side, "height": side, "transform": src.window_transform(window)}
        tmp = out.with_suffix(".partial.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            for row in range(0, side, 2048):
                part = Window(0, row, side, min(2048, side - row))
                dst.write(src.read(window=part), window=part)
    os.replace(tmp, out)
    return out


def run(mosaic: Path, model: Path, threads: int, sessions: int) -> dict:
    out = DATA / f"scored_{model.stem}_{sessions}"
    shutil.rmtree(out, ignore_errors=True)
    command = [str(BIN / "ordnance"), "score", str(mosaic), "--model", str(model), "-o", str(out), "--threads",
               str(threads), "--sessions", str(sessions), "--no-review", "--format", "csv", "--no-progress",
               "--no-resume"]  # fmt: skip
    tick = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=7200)
    wall = time.perf_counter() - tick
    manifest = json.loads((out / "manifest.json").read_text())
    with open(out / "candidates.csv", newline="") as handle:
        rows = [{k: v for k, v in r.items() if k != "processed_utc"} for r in csv.DictReader(handle)]
    entry = {"model": model.name, "sessions": sessions, "threads": threads, "wall_s": wall,
             "ha": manifest["area_scanned_ha"], "ha_per_h": manifest["area_scanned_ha"] / (wall / 3600),
             "windows": manifest["tiles"], "candidates": manifest["candidates"]}  # fmt: skip
    print(json.dumps(entry), flush=True)
    return entry | {"rows": rows}


def report(results: dict) -> str:
    lines = [
        f"{results['mosaic_px']:,}² px at 1 cm ({results['runs'][0]['ha']:.2f} ha, {results['runs'][0]['windows']} "
        f"windows), {results['threads']} threads in total; {results['machine']}; {results['date']}.",
        "",
        "| model | sessions x threads | wall (s) | ha/h | against one session | same candidates |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = {r["model"]: r["ha_per_h"] for r in results["runs"] if r["sessions"] == 1}
    for r in results["runs"]:
        lines.append(
            f"| `{r['model']}` | {r['sessions']} x {max(1, r['threads'] // r['sessions'])} | {r['wall_s']:.0f} | "
            f"{r['ha_per_h']:.1f} | {r['ha_per_h'] / base[r['model']]:.2f} | {'yes' if r['same'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="*")
    parser.add_argument("--mosaic", type=Path, default=None, help="default: a generated tiled mosaic of --size")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--crop", type=int, default=0, help="score the top-left square of this side only")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(RESULTS.read_text())
    else:
        if not args.models:
            parser.error("give one or more exported .onnx files")
        DATA.mkdir(parents=True, exist_ok=True)
        mosaic = args.mosaic or tiled_mosaic(DATA / f"tiled_{args.size}.tif", args.size)
        if args.crop:
            mosaic = crop(mosaic, args.crop)
        import rasterio

        with rasterio.open(mosaic) as src:
            side = src.width
        runs = []
        for model in args.models:
            first = None
            for sessions in args.sessions:
                entry = run(mosaic, model, args.threads, sessions)
                rows = entry.pop("rows")
                first = rows if first is None else first
                runs.append(entry | {"same": rows == first})
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        results = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "mosaic_px": side, "threads": args.threads,
                   "runs": runs}  # fmt: skip
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, RESULTS)
    text = report(results)
    (HERE / "sessions.md").write_text(text)
    write_readme_block("<!-- sessions:begin -->", "<!-- sessions:end -->", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
