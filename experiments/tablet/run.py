"""The field tablet app's speed on this CPU: onnxruntime-web (WebAssembly, SIMD, threads) in headless Chromium
against Python ONNX Runtime (``ordnance score``) on the same drone photos, float32 and int8, and a 20-photo flight.

A flight of synthetic DJI photos (4000 x 3000 px, the card's GSD, a nadir gimbal, rendered synthetic ground with
items and look-alikes) is written once. For each model file: the app is built with it, served by a local static
server with the two cross-origin isolation headers (as its service worker adds them on the tablet), and the page
scores the first photo; ``ordnance score`` scores the same photo. Each reports milliseconds per tile in the model
(the page: the worker's session.run; Python: the manifest's inference time) and seconds for the photo. Then the page
scores the whole flight with the file ``--flight`` names (the tablet's file; default float32, which onnxruntime-web
ran faster than int8 for the EfficientNet detector) and ``ordnance score`` does the same. Each run starts its
results afresh, so no figure of an earlier model is kept; until it ends they lie in results.partial.json and
results.json stays the last whole run's. Writes results.json and results.md beside this script and
the block in experiments/README.md.

    .venv/bin/python experiments/tablet/run.py [--fp32 M.onnx --int8 M.int8.onnx] [--photos 20] [--flight int8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO / "tests"))
from common import write_readme_block  # noqa: E402
from helpers import StaticServer, chromium, dji_xmp, exif_dms, wait_for  # noqa: E402

DATA = HERE / "data"
RESULTS = HERE / "results.json"
PARTIAL = HERE / "results.partial.json"  # a run's figures so far; renamed to RESULTS only when the run is whole
DEFAULT = REPO / "experiments" / "models" / "rgb.onnx"  # the published RGB model (experiments/pfm1/publish.py)
PHOTO_W, PHOTO_H = 4000, 3000  # a 12 MP drone camera
HEIGHT_M, FOCAL_MM = 10.0, 4.5


def write_flight(folder: Path, n: int, gsd_m: float) -> list[Path]:
    """``n`` nadir DJI photos at ``gsd_m`` along a line, with EXIF GNSS, lens and DJI XMP height, yaw and pitch."""
    from ordnance.datasets.synth.layout import make_scene
    from ordnance.datasets.synth.scene import render_block
    from PIL import Image
    from PIL.ExifTags import GPS, IFD, Base

    folder.mkdir(parents=True, exist_ok=True)
    photos = [folder / f"DJI_{i:04d}.JPG" for i in range(1, n + 1)]
    if all(p.exists() for p in photos):
        return photos
    pitch_mm = gsd_m * FOCAL_MM / HEIGHT_M
    for i, path in enumerate(photos):
        block, _ = render_block(make_scene(100 + i, gsd_m, 1024, 1024, patterns=2), 0, 0, 1024, 1024)
        image = np.tile(block, (3, 4, 1))[:PHOTO_H, :PHOTO_W]  # content matters little for speed
        exif = Image.Exif()
        exif[Base.Make] = "DJI"
        exif[IFD.GPSInfo] = {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: exif_dms(48.5 + i * 1e-5),
                             GPS.GPSLongitudeRef: "E", GPS.GPSLongitude: exif_dms(33.0)}  # fmt: skip
        sub = exif.get_ifd(IFD.Exif)
        sub[Base.FocalLength] = FOCAL_MM
        sub[Base.FocalPlaneXResolution] = 1 / pitch_mm
        sub[Base.FocalPlaneResolutionUnit] = 4
        xmp = dji_xmp(HEIGHT_M, 12.0, -90.0)
        tmp = path.with_suffix(".partial.jpg")
        Image.fromarray(image).save(tmp, quality=92, exif=exif, xmp=xmp.encode())
        os.replace(tmp, path)
    return photos


def page_run(model: Path, photos: list[Path], keep: bool = False) -> dict:
    from ordnance.inference.tablet import build_tablet
    from playwright.sync_api import sync_playwright

    app = DATA / f"app_{model.stem.replace('.', '_')}"
    build_tablet(app, model)
    with StaticServer(app, isolate=True) as server, sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url("index.html"))
        wait_for(page, "window.ordnanceTablet && (window.ordnanceTablet.ready || window.ordnanceTablet.errors.length)")
        errors = page.evaluate("window.ordnanceTablet.errors")
        if errors:
            raise RuntimeError(f"{model}: {errors}")
        started = time.perf_counter()
        page.set_input_files("#photos", [str(p) for p in photos])
        wait_for(page, f"window.ordnanceTablet.photos.length === {len(photos)} && !window.ordnanceTablet.busy", 3600)
        wall = time.perf_counter() - started
        state = page.evaluate(
            "(s => ({tiles: s.tiles, inferMs: s.inferMs, scoreMs: s.scoreMs, threads: s.graph.threads, "
            "candidates: s.candidates.length, status: document.getElementById('status').textContent}))"
            "(window.ordnanceTablet)"
        )
        found = None
        if keep:
            found = page.evaluate("window.ordnanceTablet.candidates.map(c => ({...c, box: undefined}))")
        version = browser.version
        browser.close()
    return {
        "photos": len(photos), "tiles": state["tiles"], "ms_per_tile": state["inferMs"] / state["tiles"],
        "seconds": state["scoreMs"] / 1000, "wall_seconds": wall, "threads": state["threads"],
        "candidates": state["candidates"], "status": state["status"], "chromium": version,
    } | ({"found": found} if keep else {})  # fmt: skip


def test_crop(size: tuple[int, int] = (4096, 3072)) -> Path | None:
    """The top-left 4096 x 3072 px of the PFM-1 test-flight mosaic (experiments/pfm1/mosaic.py) as a small
    GeoTIFF: real imagery for the page-against-Python comparison of the real model's candidates."""
    import rasterio
    from rasterio.windows import Window

    source = REPO / "experiments" / "pfm1" / "data" / "pfm1_test.tif"
    out = DATA / "pfm1_test_crop.tif"
    if out.exists() or not source.exists():
        return out if out.exists() else None
    with rasterio.open(source) as src:
        window = Window(0, 0, *size)
        profile = src.profile | {"width": size[0], "height": size[1], "transform": src.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


def candidates_parity(page: list[dict], csv_path: Path) -> dict:
    """The page's candidates against ``ordnance score``'s (same class, box within 0.5 px): how many match, and the
    largest score and box-edge differences among them."""
    import csv

    with open(csv_path, newline="") as handle:
        theirs = list(csv.DictReader(handle))
    boxes = np.array([[float(v) for v in r["bbox_px"].split(",")] for r in theirs]).reshape(-1, 4)
    matched, score_diff, edge_diff = 0, 0.0, 0.0
    for c in page:
        box = np.array([float(v) for v in c["bbox_px"].split(",")])
        edge = np.abs(boxes - box).max(axis=1) if len(boxes) else np.zeros(0)
        same = [i for i in np.flatnonzero(edge <= 0.5) if theirs[i]["class"] == c["class"]]
        if same:
            i = min(same, key=lambda k: abs(float(theirs[k]["score"]) - c["score"]))
            matched += 1
            score_diff = max(score_diff, abs(float(theirs[i]["score"]) - c["score"]))
            edge_diff = max(edge_diff, float(edge[i]))
    return {"page": len(page), "python": len(theirs), "matched": matched, "max_score_diff": score_diff,
            "max_edge_diff_px": edge_diff}  # fmt: skip


def python_run(model: Path, photos: list[Path]) -> dict:
    folder = DATA / f"input_{len(photos)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in photos:
        os.symlink(p, folder / p.name)
    out = DATA / f"scored_{model.stem.replace('.', '_')}_{len(photos)}"
    started = time.perf_counter()
    command = [str(REPO / ".venv" / "bin" / "ordnance"), "score", str(folder), "--model", str(model), "-o", str(out),
               "--no-progress", "--no-resume", "--no-review", "--format", "csv"]  # fmt: skip
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    tiles = manifest["tiles"]
    return {"photos": len(photos), "tiles": tiles, "ms_per_tile": 1000 * manifest["timings"]["infer_s"] / tiles,
            "seconds": wall, "candidates": manifest.get("candidates", None)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, default=DEFAULT)
    parser.add_argument("--int8", type=Path, default=DEFAULT.with_suffix(".int8.onnx"))
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--flight", choices=("fp32", "int8"), default="fp32", help="the file the flight runs")
    args = parser.parse_args(argv)
    for model in (args.fp32, args.int8):
        if not model.exists():
            parser.error(f"{model}: no such model; publish one (experiments/pfm1/publish.py) or pass --fp32/--int8")
    from ordnance.inference.session import open_session

    card = open_session(args.fp32).card
    photos = write_flight(DATA / "flight", args.photos, card.gsd_m)
    results: dict = {}  # afresh: figures of another model never stand beside this one's (results.json is replaced
    # only by a whole run; the figures so far lie in results.partial.json)
    results["setup"] = {"photo_px": [PHOTO_W, PHOTO_H], "gsd_m": card.gsd_m, "tile_px": card.tile_size_px,
                        "overlap_px": card.overlap_px, "cpu_cores": os.cpu_count(), "test_flips": card.test_flips,
                        "model": card.model_name, "mlflow_run": card.mlflow_run_id}  # fmt: skip
    for kind, model in (("fp32", args.fp32), ("int8", args.int8)):
        results[f"one_photo_{kind}"] = {"model": str(model.relative_to(REPO)), "page": page_run(model, photos[:1]),
                                        "python": python_run(model, photos[:1])}  # fmt: skip
        print(kind, json.dumps(results[f"one_photo_{kind}"]), flush=True)
        PARTIAL.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    crop = test_crop()
    if crop is not None:  # the real model on real imagery: the page's candidates against ordnance score's
        for kind, model in (("fp32", args.fp32), ("int8", args.int8)):
            run = page_run(model, [crop], keep=True)
            python_run(model, [crop])
            scored = DATA / f"scored_{model.stem.replace('.', '_')}_1"
            results[f"parity_{kind}"] = candidates_parity(run.pop("found"), scored / "candidates.csv")
            print(kind, results[f"parity_{kind}"], flush=True)
            PARTIAL.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    flight_model = args.fp32 if args.flight == "fp32" else args.int8
    results[f"flight_{args.flight}"] = {"model": str(flight_model.relative_to(REPO)),
                                        "page": page_run(flight_model, photos),
                                        "python": python_run(flight_model, photos)}  # fmt: skip
    PARTIAL.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(PARTIAL, RESULTS)  # a stopped run leaves the last whole run's results as they were
    report(results)
    return 0


def report(results: dict) -> str:
    s = results["setup"]
    lines = [
        f"Photos of {s['photo_px'][0]} x {s['photo_px'][1]} px at {s['gsd_m'] * 1000:.2f} mm/px, tiles of "
        f"{s['tile_px']} px with {s['overlap_px']} px overlap, on this CPU ({s['cpu_cores']} cores). Model: "
        f"{s.get('model', 'not recorded')} (MLflow run {s.get('mlflow_run', '')[:8] or 'not recorded'}), "
        f"{s.get('test_flips', 1)} view(s) per tile. Page: "
        "onnxruntime-web in headless Chromium, WebAssembly with SIMD and "
        f"{results['one_photo_fp32']['page']['threads']} threads; Python: `ordnance score` (ONNX Runtime).",
        "",
        "| run | file | tiles | ms per tile, page | ms per tile, Python | page / Python | s, page | s, Python"
        " | candidates, page / Python |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = (("one_photo_fp32", "one photo"), ("one_photo_int8", "one photo"), ("flight_fp32", "flight"),
            ("flight_int8", "flight"))  # fmt: skip
    for key, label in runs:
        if key not in results:
            continue
        r = results[key]
        page, py = r["page"], r["python"]
        kind = "int8" if "int8" in key else "fp32"
        photos = f"{page['photos']} photo{'s' if page['photos'] > 1 else ''}"
        ratio = page["ms_per_tile"] / py["ms_per_tile"]
        lines.append(
            f"| {label} ({photos}) | {kind} | {page['tiles']} | {page['ms_per_tile']:.0f} | {py['ms_per_tile']:.0f} | "
            f"{ratio:.2f} | {page['seconds']:.0f} | {py['seconds']:.0f} | {page['candidates']} / {py['candidates']} |"
        )
    parity = [(k, results[f"parity_{k}"]) for k in ("fp32", "int8") if f"parity_{k}" in results]
    if parity:
        lines += [
            "",
            "The RGB model's candidates on real imagery (the top-left 4096 x 3072 px of the PFM-1 test-flight mosaic,"
            " a GeoTIFF), page against `ordnance score` at the card's threshold (same class, box within 0.5 px):",
            "",
            "| file | candidates, page | candidates, Python | matched | largest score difference | largest box-edge "
            "difference (px) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for kind, r in parity:
            lines.append(f"| {kind} | {r['page']} | {r['python']} | {r['matched']} | {r['max_score_diff']:.1e} | "
                         f"{r['max_edge_diff_px']:.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    write_readme_block("<!-- tablet:begin -->", "<!-- tablet:end -->", text)
    flights = [k for k in ("flight_fp32", "flight_int8") if k in results]
    if flights:
        page, py = results[flights[0]]["page"], results[flights[0]]["python"]
        flight = (
            f"A {page['photos']}-photo flight ({s['photo_px'][0]} x {s['photo_px'][1]} px photos, {page['tiles']} tiles"
            f" of the RGB model, {flights[0].removeprefix('flight_')}) takes {page['seconds'] / 60:.1f} minutes in the"
            " page on this 2-core CPU, against"
            f" {py['seconds'] / 60:.1f} minutes with `ordnance score` (`experiments/tablet/run.py`)."
        )
        write_readme_block("<!-- tablet-flight:begin -->", "<!-- tablet-flight:end -->", flight, REPO / "README.md")
    return text


if __name__ == "__main__":
    sys.exit(main())
