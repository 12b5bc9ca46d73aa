"""What the review page costs against scoring: build time, files and bytes, and the page's load in Chromium,
at the real run's candidate count and at 10,000 and 100,000 candidates.

The run: the PFM-1 test-flight mosaic (experiments/pfm1/mosaic.py) scored by the int8 RGB model at a low
threshold (0.02, the setting that keeps every candidate for a recall curve), with ``--no-review``; its wall time
is the scoring time the page is compared with. Then, on copies of that run:

- ``sheets``: ``build_review`` as shipped (chips packed into JPEG sheets for the candidates scoring at least half
  the card's operating threshold, a windowed list, dots on a canvas), and the same with a chip for every candidate
  (``chip_floor=0``);
- ``per-chip PNG`` (the baseline, the page's earlier design): one PNG per candidate read through GDAL's
  boundless window, in the same run, up to 10,000 candidates (beyond that it is not run: see the table).

Larger runs are made from the real one: its candidates repeated at random positions over the mosaic's valid
pixels (scores drawn from the real ones), so chips read real imagery. Chromium (headless, Debian's) opens each
page from disk and the time to the first row drawn and the JS heap are read back.

    .venv/bin/python experiments/review_page/run.py [--model experiments/models/rgb.int8.onnx]

Writes results.json and results.md beside this script and the table into experiments/README.md between the
``<!-- review_page:begin -->`` and ``<!-- review_page:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments" / "pfm1"))
from common import write_readme_block  # noqa: E402

DATA = HERE / "data"
MOSAIC = REPO / "experiments" / "pfm1" / "data" / "pfm1_test.tif"
BASELINE_MAX = 10_000
SIZES = (10_000, 100_000)
BEGIN, END = "<!-- review_page:begin -->", "<!-- review_page:end -->"


def _bin(name: str) -> str:
    return str(Path(sys.executable).absolute().parent / name)


def score(model: Path, out: Path) -> float:
    """Wall seconds of ``ordnance score`` on the test mosaic, no review page."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    command = [_bin("ordnance"), "score", str(MOSAIC), "--model", str(model), "-o", str(out), "--no-progress",
               "--no-resume", "--no-review", "--format", "gpkg", "--score-threshold", "0.02"]  # fmt: skip
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def grown(run: Path, n: int, out: Path, seed: int = 0) -> Path:
    """A copy of ``run`` with ``n`` candidates: the real ones, then copies at random valid positions."""
    import rasterio
    import shapely
    from ordnance.inference.review import read_candidates
    from ordnance.inference.writers import write_gpkg

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy2(run / "manifest.json", out / "manifest.json")
    meta, _, table = read_candidates(run / "candidates.gpkg")
    real = len(table["id"])
    rng = np.random.default_rng(seed)
    pick = np.r_[np.arange(min(n, real)), rng.integers(0, real, max(0, n - real))]
    new = {k: np.asarray(v)[pick] for k, v in table.items()}
    with rasterio.open(MOSAIC) as src:
        mask = src.dataset_mask(out_shape=(src.height // 64, src.width // 64)) > 0
        transform = src.transform
        rows, cols = np.nonzero(mask)
        extra = n - min(n, real)
        at = rng.integers(0, len(rows), extra)
        cy = (rows[at] + rng.random(extra)) * 64
        cx = (cols[at] + rng.random(extra)) * 64
    boxes = np.array([[float(v) for v in b.split(",")] for b in new["bbox_px"][real:]]).reshape(-1, 4)
    half_w, half_h = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    new["bbox_px"][real:] = [f"{x - w:.1f},{y - h:.1f},{x + w:.1f},{y + h:.1f}"
                             for x, y, w, h in zip(cx, cy, half_w, half_h)]  # fmt: skip
    xs, ys = transform * (cx, cy)
    new["x"][real:], new["y"][real:] = xs, ys
    new["id"] = np.arange(1, n + 1, dtype=np.int64)
    geom = np.c_[new["x"], new["y"]]
    write_gpkg(out / "candidates.gpkg", new, geom, meta["crs"], shapely.MultiPolygon())
    return out


def baseline(run: Path, chip_px: int = 96) -> float:
    """The earlier page's chips: one PNG per candidate through a boundless windowed read; seconds."""
    import rasterio
    from ordnance.inference.review import _to_uint8, read_candidates
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    def _write_png(path: Path, data: np.ndarray) -> None:  # through GDAL, as the earlier page wrote its chips
        profile = dict(driver="PNG", width=data.shape[2], height=data.shape[1], count=3, dtype="uint8")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)

    _, _, table = read_candidates(run / "candidates.gpkg")
    files = run / "baseline_files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    start = time.perf_counter()
    with warnings.catch_warnings(), rasterio.open(MOSAIC) as src:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for i in np.argsort(-np.asarray(table["score"], float), kind="stable"):
            x0, y0, x1, y1 = (float(v) for v in str(table["bbox_px"][i]).split(","))
            side = int(max(chip_px, 2.5 * max(x1 - x0, y1 - y0)))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            window = Window(round(cx - side / 2), round(cy - side / 2), side, side)
            chip = src.read([1, 2, 3], window=window, boundless=True, fill_value=0, out_shape=(3, chip_px, chip_px))
            _write_png(files / f"chip_{int(table['id'][i])}.png", _to_uint8(chip))
    return time.perf_counter() - start


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def browser_load(page: Path) -> dict:
    """Seconds to the first candidate row and the JS heap, in headless Chromium; None without it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return {}
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1280, "height": 800})
        start = time.perf_counter()
        tab.goto(page.as_uri(), timeout=600_000)
        tab.wait_for_selector(".cand", timeout=600_000)
        first_row_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(20):
            tab.keyboard.press("j")
        tab.wait_for_selector(".cand.sel")
        step_ms = (time.perf_counter() - start) / 20 * 1000
        rows = tab.locator(".cand").count()
        heap = tab.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        browser.close()
    return {"first_row_s": first_row_s, "key_step_ms": step_ms, "rows_in_dom": rows,
            "js_heap_mb": heap / 1e6 if heap else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "experiments" / "models" / "rgb.int8.onnx")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="candidate counts beside the run's")
    parser.add_argument("--baseline-max", type=int, default=BASELINE_MAX, help="largest count the baseline runs at")
    parser.add_argument("--no-readme", action="store_true", help="leave experiments/README.md as it is")
    args = parser.parse_args(argv)
    from ordnance.inference.review import build_review

    if not MOSAIC.exists():
        subprocess.run([sys.executable, str(HERE.parent / "pfm1" / "mosaic.py"), "--split", "test"], check=True)
    if not args.model.exists():
        sys.exit(f"{args.model}: missing; export the RGB model first (experiments/README.md)")
    DATA.mkdir(parents=True, exist_ok=True)
    run = DATA / "scored"
    score_s = score(args.model, run)
    real = int(json.loads((run / "manifest.json").read_text())["candidates"])
    rows = []
    for n in (real, *args.sizes):
        work = grown(run, n, DATA / f"n{n}")
        start = time.perf_counter()
        page = build_review(work, chip_floor=0.0)  # a chip for every candidate
        every_s = time.perf_counter() - start
        every_files, every_size = folder_size(work / "review_files")
        start = time.perf_counter()
        page = build_review(work)  # as shipped: chips from half the card's operating threshold
        build_s = time.perf_counter() - start
        files, size = folder_size(work / "review_files")
        data = json.loads(page.read_text().split("const DATA = ", 1)[1].split(";\n", 1)[0])  # chipped, chip_floor
        row = {"candidates": n, "real": n == real, "build_s": build_s, "files": files,
               "bytes": size + page.stat().st_size, "html_bytes": page.stat().st_size,
               "share_of_scoring": build_s / score_s, "chipped": data["chipped"], "chip_floor": data["chip_floor"],
               "every_chip_s": every_s, "every_chip_share": every_s / score_s, "every_chip_files": every_files,
               "every_chip_bytes": every_size, **browser_load(page)}  # fmt: skip
        if n <= args.baseline_max:
            row["baseline_s"] = baseline(work)
            row["baseline_files"], row["baseline_bytes"] = folder_size(work / "baseline_files")
            row["baseline_share_of_scoring"] = row["baseline_s"] / score_s
            shutil.rmtree(work / "baseline_files")
        rows.append(row)
        print(json.dumps(row), flush=True)
    results = {"mosaic": MOSAIC.name, "model": args.model.name, "score_s": score_s, "threshold": 0.02,
               "cores": os.cpu_count(), "rows": rows}  # fmt: skip
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = report(results)
    (HERE / "results.md").write_text(table + "\n")
    if not args.no_readme:
        write_readme_block(BEGIN, END, table)
    print(table)
    return 0


def report(results: dict) -> str:
    def mb(v):
        return f"{v / 1e6:.1f}"

    lines = [
        f"Scoring {results['mosaic']} with {results['model']} at {results['threshold']}: "
        f"{results['score_s']:.0f} s on {results['cores']} cores (`ordnance score --no-review`).",
        "",
        "| candidates | with chips (score floor) | page build s (share of scoring) | files | MB | a chip for every "
        "candidate: s (share), files, MB | baseline: per-chip PNG s (share) | baseline files | baseline MB | "
        "Chromium: first row s | s per key step | rows in DOM | JS heap MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        n = f"{r['candidates']:,}" + (" (the run's own)" if r["real"] else "")
        base = (f"{r['baseline_s']:.1f} ({r['baseline_share_of_scoring']:.0%})", f"{r['baseline_files']:,}",
                mb(r["baseline_bytes"])) if "baseline_s" in r else ("not run", "", "")  # fmt: skip
        heap = f"{r['js_heap_mb']:.0f}" if r.get("js_heap_mb") else ""
        chrome = (f"{r['first_row_s']:.1f}", f"{r['key_step_ms'] / 1000:.3f}", str(r["rows_in_dom"])) \
            if "first_row_s" in r else ("", "", "")  # fmt: skip
        chips = f"{r['chipped']:,} ({r['chip_floor']:.3f})" if "chipped" in r else f"{r['candidates']:,} (0)"
        every = (f"{r['every_chip_s']:.1f} ({r['every_chip_share']:.0%}), {r['every_chip_files']:,}, "
                 f"{mb(r['every_chip_bytes'])}") if "every_chip_s" in r else ""  # fmt: skip
        lines.append(f"| {n} | {chips} | {r['build_s']:.1f} ({r['share_of_scoring']:.0%}) | {r['files']:,} | "
                     f"{mb(r['bytes'])} | {every} | {' | '.join(base)} | {' | '.join(chrome)} | {heap} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
