"""What the review page costs against scoring: the images the scorer cuts as it reads the windows, the page
build, files and bytes, and the page's load in Chromium, on real runs of 40,000 to over 100,000 candidates.

The runs: the PFM-1 test-flight mosaic (experiments/pfm1/mosaic.py) scored by the int8 RGB model at 0.02 (the
setting that keeps every candidate for a recall curve), the test- and valid-flight mosaics scored together at
0.005, and the four training flights' mosaic at 0.02 (imagery only: no model here is judged on it); each four
times, one after the other, with ``--no-review``: twice with ``--no-review-preview`` (the scorer alone, whose mean
time the page is compared with) and twice as shipped, in the order without, with, with, without (the scorer also
cuts the page's overview and chips, ``review_preview.npz``). The page's cost is the build plus the scorer's time
cutting the images, timed inside the scorer (the difference of the mean scoring times is reported too). On each:

- the page as shipped: chips for the candidates scoring at least half the card's operating threshold, taken from
  the scorer's cut, the rest read from the source;
- a chip for every candidate (``chip_floor=0``): the chips below the scorer's floor are read from the source;
- the page of the run scored with ``--no-review-preview`` (a run from before the preview, or with it turned off):
  the overview and every chip read from the source, the page's earlier design.

Chromium (headless, Debian's) opens each shipped page from disk and the time to the first row drawn and the JS
heap are read back.

    .venv/bin/python experiments/review_page/run.py --model experiments/pfm1/data/fast_real.int8.onnx

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
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments" / "pfm1"))
from common import write_readme_block  # noqa: E402

DATA = HERE / "data"
MOSAIC = REPO / "experiments" / "pfm1" / "data" / "pfm1_test.tif"
VALID = REPO / "experiments" / "pfm1" / "data" / "pfm1_valid.tif"
TRAIN = REPO / "experiments" / "pfm1" / "data" / "pfm1_train.tif"
# name -> (mosaics scored in one run, score threshold): the test flight as a recall curve keeps it, both flights
# at a lower threshold, and the four training flights' mosaic for a run of well over 100,000 candidates (the
# scorer keeps at most 300 per window, so a low threshold alone does not reach them on the small flights)
RUNS = {"test": ([MOSAIC], 0.02), "test_valid": ([MOSAIC, VALID], 0.005), "train": ([TRAIN], 0.02)}
BEGIN, END = "<!-- review_page:begin -->", "<!-- review_page:end -->"


def _bin(name: str) -> str:
    return str(Path(sys.executable).absolute().parent / name)


def score(model: Path, out: Path, mosaics: list[Path], threshold: float, preview: bool) -> float:
    """Wall seconds of ``ordnance score`` on ``mosaics``, no review page; with or without the scorer's cut of its
    images."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    command = [_bin("ordnance"), "score", *map(str, mosaics), "--model", str(model), "-o", str(out), "--no-progress",
               "--no-resume", "--no-review", "--format", "gpkg", "--score-threshold", str(threshold),
               "--review-preview" if preview else "--no-review-preview"]  # fmt: skip
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def page(run: Path, **options) -> dict:
    """Build the page on ``run``: seconds, files, bytes and where its images came from."""
    from ordnance.inference.review import build_review

    shutil.rmtree(run / "review_files", ignore_errors=True)
    start = time.perf_counter()
    built = build_review(run, **options)
    seconds = time.perf_counter() - start
    files, size = folder_size(run / "review_files")
    data = json.loads(built.read_text().split("const DATA = ", 1)[1].split(";\n", 1)[0])
    return {"s": seconds, "files": files, "bytes": size + built.stat().st_size, "chipped": data["chipped"],
            "chip_floor": data["chip_floor"], "images": data["images"], "page": str(built)}  # fmt: skip


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
    parser.add_argument("--no-readme", action="store_true", help="leave experiments/README.md as it is")
    args = parser.parse_args(argv)
    for split, path in (("test", MOSAIC), ("valid", VALID), ("train", TRAIN)):
        if not path.exists():
            subprocess.run([sys.executable, str(HERE.parent / "pfm1" / "mosaic.py"), "--split", split], check=True)
    if not args.model.exists():
        sys.exit(f"{args.model}: missing; export the RGB model first (experiments/README.md)")
    DATA.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (mosaics, threshold) in RUNS.items():
        plain_run, run = DATA / f"{name}_plain", DATA / name
        # four runs in the order without, with, with, without (a drift of the machine over the four cancels in the
        # means); the folders keep the last run of each
        times = {False: [], True: []}
        for preview in (False, True, True, False):
            times[preview].append(score(args.model, run if preview else plain_run, mosaics, threshold, preview))
        plain_s, score_s = float(np.mean(times[False])), float(np.mean(times[True]))
        manifest = json.loads((run / "manifest.json").read_text())
        shipped = page(run)
        every = page(run, chip_floor=0.0)
        shipped = page(run)  # the shipped page last, for the browser
        earlier = page(plain_run)
        # the scorer's cut of the images, timed inside it (the difference of the two scoring runs is kept too: it
        # moves by more than the cut costs from one run to the next)
        cut_s = manifest["timings"].get("preview_s", 0.0) + manifest["timings"].get("preview_write_s", 0.0)
        row = {"run": name, "mosaics": [m.name for m in mosaics], "threshold": threshold,
               "candidates": manifest["candidates"], "area_ha": manifest["area_scanned_ha"],
               "score_plain_s": plain_s, "score_s": score_s, "score_times_s": {"without": times[False],
               "with": times[True]}, "cut_s": cut_s, "difference_s": score_s - plain_s,
               "preview_bytes": (run / "review_preview.npz").stat().st_size,
               "shipped": shipped, "every_chip": every, "earlier": earlier,
               "share": (shipped["s"] + cut_s) / plain_s,
               "every_share": (every["s"] + cut_s) / plain_s,
               "earlier_share": earlier["s"] / plain_s,
               **browser_load(Path(shipped["page"]))}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    results = {"model": args.model.name, "cores": os.cpu_count(), "rows": rows}
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
        f"{results['model']} on {results['cores']} cores, each run scored four times one after the other (`ordnance "
        "score --no-review`, without, with, with and without `--no-review-preview`; scoring times are the means). "
        "Page cost: the build plus the scorer's time cutting the images (timed inside the scorer: `preview_s` "
        "and `preview_write_s` of its manifest), as a share of the scoring without the cut.",
        "",
        "| run | candidates | with chips (score floor) | scoring s | scoring with the cut s (difference) | "
        "the cut s | page build s | page cost (share of scoring) | files | MB (page + review_preview.npz) | "
        "chips cut / read | a chip for every candidate: s (share), chips read | "
        "page of a run scored without the cut: s (share) | "
        "Chromium: first row s | s per key step | JS heap MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        s, e, old = r["shipped"], r["every_chip"], r["earlier"]
        heap = f"{r['js_heap_mb']:.0f}" if r.get("js_heap_mb") else ""
        chrome = (f"{r['first_row_s']:.1f}", f"{r['key_step_ms'] / 1000:.3f}") if "first_row_s" in r else ("", "")
        lines.append(
            f"| {' + '.join(r['mosaics'])} at {r['threshold']:g} ({r['area_ha']:.3f} ha) | {r['candidates']:,} | "
            f"{s['chipped']:,} ({s['chip_floor']:.3f}) | {r['score_plain_s']:.1f} | {r['score_s']:.1f} "
            f"({r['difference_s']:+.1f}) | {r['cut_s']:.2f} | {s['s']:.2f} | {s['s'] + r['cut_s']:.2f} "
            f"({r['share']:.1%}) | "
            f"{s['files']:,} | {mb(s['bytes'])} + {mb(r['preview_bytes'])} | {s['images']['chips_cut']:,} / "
            f"{s['images']['chips_read']:,} | {e['s']:.1f} ({r['every_share']:.0%}), {e['images']['chips_read']:,} | "
            f"{old['s']:.1f} ({r['earlier_share']:.0%}) | {' | '.join(chrome)} | {heap} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
