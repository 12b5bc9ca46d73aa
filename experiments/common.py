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
