"""Helpers shared by the benchmarks in experiments/."""

from __future__ import annotations

import os
from pathlib import Path


def tiled_mosaic(path: Path, size_px: int, seed: int = 0) -> Path:
    """A large mosaic fast: one rendered 1024 px synthetic scene block (terrain, items, look-alikes) repeated;
    every window holds data. Content matters little for speed and memory."""
    if path.exists():
        return path
    import rasterio
    from ordnance.datasets.synth.layout import make_scene
    from ordnance.datasets.synth.scene import render_block
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    block, _ = render_block(make_scene(seed, 0.01, 1024, 1024, patterns=3), 0, 0, 1024, 1024)
    profile = dict(
        driver="GTiff",
        width=size_px,
        height=size_px,
        count=3,
        dtype="uint8",
        crs="EPSG:32636",
        transform=from_origin(411000, 5535000, 0.01, 0.01),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        zlevel=1,
        BIGTIFF="YES",
        nodata=0,
    )
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size_px, 1024):
            for x in range(0, size_px, 1024):
                w, h = min(1024, size_px - x), min(1024, size_px - y)
                dst.write(block[:h, :w].transpose(2, 0, 1), window=Window(x, y, w, h))
    os.replace(tmp, path)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), MB; it starts afresh at exec, unlike getrusage's maxrss,
    which a forked child inherits from its parent."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) / 1024


def write_readme_block(begin: str, end: str, text: str, readme: Path | None = None) -> None:
    """Replace the text between two markers of experiments/README.md, or of ``readme`` (left as is without the
    markers)."""
    readme = readme or Path(__file__).resolve().parent / "README.md"
    body = readme.read_text()
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{begin}\n{text.rstrip(chr(10))}\n{end}{tail}")


def curve_events(report: dict):
    """(scores, true positive) of every candidate of one ``evaluate_mosaic`` report, from its recall curve."""
    import numpy as np

    thresholds, recall, _ = (np.asarray(a, float) for a in report["pr_curve"])
    n_truth = report["overall"]["n_truth"]
    tp = np.diff(np.r_[0.0, np.round(recall * n_truth)]) > 0
    return thresholds, tp


def pooled_curve(reports: list[dict]):
    """Every candidate of several evaluations together, best score first: (scores, recall, false alarms per ha)
    after each, over all their items and hectares."""
    import numpy as np

    events = [curve_events(r) for r in reports]
    scores = np.concatenate([e[0] for e in events]) if events else np.zeros(0)
    tp = np.concatenate([e[1] for e in events]) if events else np.zeros(0, bool)
    items = sum(r["overall"]["n_truth"] for r in reports)
    area = sum(r["area_ha"] for r in reports)
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order]
    return scores, np.cumsum(tp) / max(items, 1), np.cumsum(~tp) / area


def recall_within(recall, false_alarms_per_ha, budget: float) -> float:
    """The highest recall of a pooled curve whose false alarms per ha stay within ``budget``."""
    ok = false_alarms_per_ha <= budget + 1e-9
    return float(recall[ok].max()) if ok.any() else 0.0
