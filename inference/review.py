"""An offline review page for a scoring run, and merging a reviewer's decisions back.

``build_review(out_dir)`` writes ``review.html`` plus ``review_files/`` (an overview image per source and the
candidates' chips packed into JPEG sheets) beside the outputs: no CDN, no server; it opens from a USB stick.
Decisions stay in the browser (localStorage) and export as GeoJSON or CSV with ``review_status`` filled in;
``merge_decisions`` writes them back into the run's GeoPackage.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
from ordnance.inference.areas import derive_areas, model_of, read_settings, write_area_exports, write_area_layer
from ordnance.inference.errors import InputError
from ordnance.inference.preview import Overview, chip_origin, chip_side, chip_steps, read_preview
from ordnance.inference.raster import open_raster, source_of
from ordnance.inference.styles import write_styles
from ordnance.inference.writers import atomic_path, read_manifest
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

log = logging.getLogger(__name__)

STATUSES = ("unreviewed", "confirmed", "rejected", "unsure")
TEMPLATE = Path(__file__).with_name("review_template.html")


PAGE_FIELDS = ("id", "class", "score", "lon", "lat", "x", "y", "crs", "source", "bbox_px")


def read_candidates(gpkg: Path, columns: tuple[str, ...] | None = None) -> tuple[dict, np.ndarray | None, dict]:
    """(layer metadata, point geometries, field name -> values) of a run's candidates.gpkg; with ``columns``,
    only those fields and no geometries (None), which reads a large run several times faster."""
    if not gpkg.exists():
        raise InputError("no candidates.gpkg here; run 'ordnance score' first", gpkg)
    try:
        if columns is None:
            meta, _, geometry, fields = pyogrio.raw.read(gpkg, layer="candidates")
        else:
            meta, _, geometry, fields = pyogrio.raw.read(gpkg, layer="candidates", columns=list(columns),
                                                         read_geometry=False)  # fmt: skip
    except Exception as error:  # GDAL raises many kinds for a damaged or foreign file
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise InputError(f"not a readable candidates GeoPackage ({reason}); score again", gpkg) from None
    table = dict(zip(meta["fields"], fields))
    needed = {"id", "score", "class", "x", "y", "bbox_px", "source", "review_status"}
    missing = sorted((needed if columns is None else set(columns)) - set(table))
    if missing:
        raise InputError(f"has no {missing} fields: not written by 'ordnance score'", gpkg)
    return meta, geometry, table


def _to_uint8(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    low, high = np.percentile(data, [1, 99])
    return np.clip((data - low) * 255.0 / max(high - low, 1e-6), 0, 255).astype(np.uint8)


ORDERS = ("score", "informative")


def informative_order(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Candidate indices, the decision that teaches the model most first: scores nearest the operating
    threshold on the logit scale (where the model is least sure which side an object falls), ties by id."""
    p = np.clip(np.asarray(scores, np.float64), 1e-6, 1 - 1e-6)
    t = float(np.clip(threshold, 1e-6, 1 - 1e-6))
    distance = np.abs(np.log(p / (1 - p)) - np.log(t / (1 - t)))
    return np.argsort(distance, kind="stable")


def build_review(
    out_dir: str | Path,
    *,
    chip_px: int = 96,
    overview_px: int = 1600,
    order: str = "score",
    chip_floor: float | None = None,
) -> Path:
    """Write ``review.html`` and its images for the scoring run in ``out_dir``.

    ``order`` is the page's first list order: ``score`` (highest first) or ``informative`` (nearest the
    model card's operating threshold first, :func:`informative_order`); the page can switch between them.

    ``chip_floor``: candidates scoring below it are listed and marked on the overview without an image chip
    (None: half the model card's operating threshold; 0: a chip for every candidate). A run scored at a low
    threshold for a recall curve holds tens of thousands of candidates far below the operating point; their
    chips would cost more than the scoring. The page's header says how many candidates have chips and from
    which score."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not 16 <= chip_px <= 1024:
        raise ValueError(f"chip_px must be 16 to 1024 pixels, got {chip_px}")
    if chip_floor is not None and not 0.0 <= chip_floor <= 1.0:
        raise ValueError(f"chip_floor must be a score from 0 to 1, got {chip_floor}")
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        raise InputError("no manifest.json here; run 'ordnance score' first", out_dir)
    manifest = read_manifest(manifest_path)
    _, _, table = read_candidates(out_dir / "candidates.gpkg", PAGE_FIELDS)
    paths = [source_of(entry["path"]) for entry in manifest["inputs"]]
    sources = {path.name: (k, path) for k, path in enumerate(paths)}
    card = json.loads(manifest["model"]["card"])
    floor = float(card["score_threshold"]) / 2 if chip_floor is None else float(chip_floor)
    files = Path(tempfile.mkdtemp(prefix=".review_files.", dir=out_dir))
    os.chmod(files, 0o755)
    try:
        images: dict[str, int] = {}
        overviews, columns, chipped = _write_images(files, sources, table, manifest, chip_px, overview_px, floor,
                                                    read_preview(out_dir, chip_px, overview_px), images)  # fmt: skip
    except BaseException:
        shutil.rmtree(files, ignore_errors=True)
        raise
    payload = {
        "run": run_id(manifest),
        "model": card["model_name"],
        "threshold": manifest["settings"]["score_threshold"],
        "operating_threshold": card["score_threshold"],
        "order": order,
        "chip_grid": _sheet_grid(chip_px),
        "chip_floor": floor,
        "chipped": chipped,
        "images": images,
        "area_ha": manifest["area_scanned_ha"],
        "overviews": overviews,
        "columns": columns,
    }
    html = _pin_script(TEMPLATE.read_text().replace("/*DATA*/null", json.dumps(payload).replace("</", "<\\/")))
    page = out_dir / "review.html"
    final = out_dir / "review_files"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(files, final)
    with atomic_path(page) as tmp:
        tmp.write_text(html)
    log.info("review page: %s (%d candidates)", page, len(columns["id"]))
    return page


def _sheet_grid(chip_px: int) -> int:
    """Chips per side of a sheet: up to 16 x 16, a sheet at most 4096 px wide."""
    return max(1, min(16, 4096 // chip_px))


CELL_PX = 1024  # chips are cut from reads of this many source pixels square (plus a margin), each read once
STORE_IN_MEMORY_BYTES = 2 << 30  # chips beyond this (about 75,000 at 96 px) wait for their sheet on disk


def _write_images(files: Path, sources: dict, table: dict, manifest: dict, chip_px: int, overview_px: int,
                  floor: float = 0.0, preview: tuple[dict, dict] = ({}, {}), images: dict | None = None):  # fmt: skip
    """Overviews (one JPEG per source) and chips packed into JPEG sheets of up to 16 x 16 in score order, so the
    page loads one sheet for a screen of candidates and a survey of 100,000 candidates writes a few hundred
    files, not 100,000. The overviews and chips the scorer cut (``preview``: overviews by source index, chips by
    candidate id) are taken as they are; what is missing is cut in raster order, each ``CELL_PX`` square of a
    source that holds a missing chip (every square, for a missing overview) read once, into an array (on disk
    beyond ``STORE_IN_MEMORY_BYTES``); the sheets are then assembled from it in score order.
    Candidates scoring below ``floor`` get no chip (their ``sheet`` and ``cell`` are None): being the last in
    score order, the chips are the first ``chipped`` of that order. Returns (overviews, candidate columns,
    chipped) for the page's data; ``images`` receives how many overviews and chips came from the scorer and how
    many were read from the sources."""
    cut_overviews, cut_chips = preview
    images = {} if images is None else images
    images.update(overviews_cut=0, overviews_read=0, chips_cut=0, chips_read=0)
    card = json.loads(manifest["model"]["card"])
    scores = np.asarray(table["score"], float)
    n = len(scores)
    rank = np.empty(n, np.int64)
    rank[informative_order(table["score"], card["score_threshold"])] = np.arange(n)
    by_score = np.argsort(-scores, kind="stable")
    slot = np.empty(n, np.int64)
    slot[by_score] = np.arange(n)
    chipped = int((scores >= floor).sum())
    bbox_px = np.asarray(table["bbox_px"]).astype(str)
    boxes = np.array(",".join(bbox_px).split(",") if n else [], float).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = chip_side(boxes, chip_px)
    names = np.asarray(table["source"]).astype(str)
    ids = np.asarray(table["id"]).astype(np.int64)
    scratch = files / ".chips.npy"
    shape = (max(chipped, 1), chip_px, chip_px, 3)
    if np.prod(shape) <= STORE_IN_MEMORY_BYTES:
        store = np.empty(shape, np.uint8)
    else:  # a scratch array on disk beside the page
        store = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
    overviews = []
    for name, (k, path) in sources.items():
        width, height = int(manifest["inputs"][k]["width"]), int(manifest["inputs"][k]["height"])
        mine = np.flatnonzero((names == name) & (slot < chipped))
        for i in mine:
            if int(ids[i]) in cut_chips:
                store[slot[i]] = cut_chips.get(int(ids[i]))
        missing = np.array([i for i in mine if int(ids[i]) not in cut_chips], np.int64)
        overview_image = cut_overviews.get(k)
        images["chips_cut"] += len(mine) - len(missing)
        images["chips_read"] += len(missing)
        images["overviews_cut" if overview_image is not None else "overviews_read"] += 1
        if overview_image is None or len(missing):
            overview_image = _read_missing(path, width, height, overview_image, overview_px, missing, cx, cy, side,
                                           chip_px, store, slot)  # fmt: skip
        # JPEG: a photograph-like preview; on aerial imagery a twentieth of a PNG's encoding time, a quarter
        # of its size
        _write_jpeg(files / f"overview_{k}.jpg", np.transpose(_to_uint8(overview_image), (1, 2, 0)))
        overviews.append({"image": f"review_files/overview_{k}.jpg", "source": name, "width": width,
                          "height": height})  # fmt: skip
    grid = _sheet_grid(chip_px)
    per_sheet = grid * grid
    for first in range(0, chipped, per_sheet):
        sheet_index = first // per_sheet
        count = min(per_sheet, chipped - first)
        rows = -(-count // grid)
        cells = np.zeros((rows * grid, chip_px, chip_px, 3), np.uint8)
        cells[:count] = store[first : first + count]
        sheet = cells.reshape(rows, grid, chip_px, chip_px, 3).transpose(0, 2, 1, 3, 4)
        sheet = sheet.reshape(rows * chip_px, grid * chip_px, 3)[:, : min(grid, count) * chip_px]
        _write_jpeg(files / f"chips_{sheet_index}.jpg", sheet)
    del store
    scratch.unlink(missing_ok=True)
    return overviews, _columns(table, by_score, sources, overviews, names, bbox_px, cx, cy, rank), chipped


def _read_missing(path, width: int, height: int, overview_image, overview_px: int, missing: np.ndarray, cx, cy, side,
                  chip_px: int, store, slot) -> np.ndarray:  # fmt: skip
    """Read from the source what the scorer did not cut: the chips of candidates ``missing`` into ``store`` and,
    when ``overview_image`` is None, the overview. Returns the overview."""
    if isinstance(path, Path) and not path.exists():  # a URL is read where it lies
        raise InputError(f"source image {path.name} of this run is no longer at {path}; restore it there first", path)
    with open_raster(path) as src:
        if (src.width, src.height) != (width, height):
            raise InputError(f"is {src.width} x {src.height} px, not the {width} x {height} px this run scored", path)
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        overview = Overview(width, height, overview_px, src.dtypes[0]) if overview_image is None else None
        boxes = np.c_[cx[missing], cy[missing], cx[missing], cy[missing]]
        left_px, top_px = chip_origin(boxes, width, height, side[missing])
        # A box centred on the tile padding beyond the raster's edge is cut at the edge.
        px, py = np.clip(cx, 0, width - 1), np.clip(cy, 0, height - 1)
        col, row = (px[missing] // CELL_PX).astype(np.int64), (py[missing] // CELL_PX).astype(np.int64)
        cells: dict[tuple[int, int], list[int]] = {}
        for j, (r, c) in enumerate(zip(row, col)):
            cells.setdefault((int(r), int(c)), []).append(j)
        # Each cell needed is read once, in raster order (several read and decoded at a time, each reader thread
        # with its own handle): its chips are sliced from it and the overview sampled. Without an overview to
        # make, only the cells holding a missing chip.
        if overview is None and len(missing) <= 2 * len(cells):  # a few chips: each read alone, by its own window
            for j, i in enumerate(missing):
                k_px = int(side[i])
                block = _read_square(src, path, bands, int(left_px[j]), int(top_px[j]), k_px)
                steps = chip_steps(k_px, chip_px)
                chip = block[:, steps][:, :, steps]
                store[slot[i]] = (chip if chip.dtype == np.uint8 else _to_uint8(chip)).transpose(1, 2, 0)
            return overview_image
        every = [(r, c) for r in range(-(-height // CELL_PX)) for c in range(-(-width // CELL_PX))]
        grid_cells = every if overview is not None else sorted(cells)
        margins = {rc: int(side[missing[m]].max()) // 2 + 2 for rc, m in cells.items()}
        for (r, c), block, left, top in _read_cells(path, bands, grid_cells, margins):
            if overview is not None:
                overview.add(block, left, top, (c * CELL_PX, r * CELL_PX, (c + 1) * CELL_PX, (r + 1) * CELL_PX))
            for j in cells.get((r, c), []):
                i = missing[j]
                x0, y0 = left_px[j] - left, top_px[j] - top
                if side[i] == chip_px:  # 1:1, a slice
                    chip = block[:, y0 : y0 + chip_px, x0 : x0 + chip_px]
                else:  # nearest neighbour, one axis at a time
                    steps = chip_steps(int(side[i]), chip_px)
                    chip = block[:, y0 + steps][:, :, x0 + steps]
                store[slot[i]] = (chip if chip.dtype == np.uint8 else _to_uint8(chip)).transpose(1, 2, 0)
    return overview.image if overview is not None else overview_image


def _read_square(src, path, bands: list[int], left: int, top: int, size: int) -> np.ndarray:
    """The ``size`` square at (``left``, ``top``) of an open raster, zeros beyond its edges."""
    c0, r0 = max(0, left), max(0, top)
    c1, r1 = min(src.width, left + size), min(src.height, top + size)
    block = np.zeros((3, size, size), src.dtypes[0])
    if c1 > c0 and r1 > r0:
        try:
            data = src.read(bands, window=Window(c0, r0, c1 - c0, r1 - r0))
        except RasterioIOError as error:
            raise InputError(f"read failed in window {(c0, r0, c1, r1)} ({str(error)[:160]})", path) from None
        block[:, r0 - top : r1 - top, c0 - left : c1 - left] = data
    return block


def _columns(table, by_score, sources, overviews, names, bbox_px, cx, cy, rank) -> dict:
    """The page's candidate data in score order, one list per field (a list of 100,000 objects would spell every
    key 100,000 times): class and CRS as indices into their names, the source as its overview's index. A
    candidate's chip is cell ``position % chip_grid**2`` of sheet ``position // chip_grid**2`` when its position
    in this order is below the payload's ``chipped``; the page derives both."""
    o = by_score
    ov = np.array([sources[name][0] for name in names[o]], np.int64) if len(o) else np.zeros(0, np.int64)
    width = np.array([v["width"] for v in overviews], float)[ov] if len(o) else np.zeros(0)
    height = np.array([v["height"] for v in overviews], float)[ov] if len(o) else np.zeros(0)
    classes, class_index = np.unique(np.asarray(table["class"]).astype(str)[o], return_inverse=True)
    crs_names, crs_index = np.unique(np.asarray(table["crs"]).astype(str)[o], return_inverse=True)
    return {
        "id": np.asarray(table["id"]).astype(np.int64)[o].tolist(),
        "classes": classes.tolist(), "class": class_index.tolist(),
        "score": np.round(np.asarray(table["score"], float)[o], 4).tolist(),
        **{f: _nullable(np.asarray(table[f], float)[o]) for f in ("lon", "lat", "x", "y")},
        "crs_names": crs_names.tolist(), "crs": crs_index.tolist(),
        "source": ov.tolist(), "bbox_px": bbox_px[o].tolist(),
        "ox": np.round(cx[o] / np.maximum(width, 1), 6).tolist(),
        "oy": np.round(cy[o] / np.maximum(height, 1), 6).tolist(),
        "informative": rank[o].tolist(),
    }  # fmt: skip


def _nullable(values: np.ndarray) -> list:
    """Floats as a JSON-ready list, NaN (no value) as None."""
    out = values.tolist()
    return [None if v != v else v for v in out] if np.isnan(values).any() else out


def _read_cells(path, bands: list[int], grid_cells, margins: dict):
    """Yield ((row, col), block, left, top) for each cell in ``grid_cells``, in that order: the ``CELL_PX`` square
    and its margin (``margins``, 0 where absent), zeros beyond the raster. One reader thread per core, each with
    its own dataset handle (GDAL decodes without the GIL), at most two cells per thread ahead of the consumer."""
    local = threading.local()
    handles = []

    def read(rc):
        if not hasattr(local, "src"):
            local.src = open_raster(path)
            handles.append(local.src)
        r, c = rc
        margin = margins.get(rc, 0)
        left, top = c * CELL_PX - margin, r * CELL_PX - margin
        return rc, _read_square(local.src, path, bands, left, top, CELL_PX + 2 * margin), left, top

    workers = max(1, min(4, os.cpu_count() or 1))
    pending: deque = deque()
    cells = iter(grid_cells)
    with ThreadPoolExecutor(workers, thread_name_prefix="review-read") as pool:
        try:
            for rc in itertools.islice(cells, 2 * workers):
                pending.append(pool.submit(read, rc))
            while pending:
                result = pending.popleft().result()
                nxt = next(cells, None)
                if nxt is not None:
                    pending.append(pool.submit(read, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()
    for handle in handles:
        handle.close()


def _write_jpeg(path: Path, data: np.ndarray, quality: int = 90) -> None:
    """An (H, W, 3) uint8 array as a JPEG (Pillow: GDAL's JPEG writer takes ten times as long per sheet)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(data)).save(path, quality=quality)


def _pin_script(html: str) -> str:
    """Allow exactly the page's own script: its sha256 replaces ``'unsafe-inline'`` in the CSP, so no injected
    markup (an ``onerror`` attribute, a ``<script>``) can run even if a name slipped past escaping."""
    start = html.index("<script>") + len("<script>")
    body = html[start : html.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return html.replace("script-src 'unsafe-inline'", f"script-src 'sha256-{digest}'", 1)


def run_id(manifest: dict) -> str:
    """The identity of a scoring run: a hash of its inputs' and model's sha256 and its start time. The review
    page writes it into every exported decision, and import refuses decisions of another run."""
    # an input read by URL has no sha256 (hashing would read it whole): its URL and the server's size and ETag
    inputs = [i["sha256"] or json.dumps([i["path"], i.get("remote")], sort_keys=True) for i in manifest["inputs"]]
    parts = [*sorted(inputs), manifest["model"]["sha256"], manifest["started_utc"]]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def read_decisions(path: str | Path) -> dict[int, dict]:
    """id -> {"status", "run", "x", "y"} from an exported GeoJSON or CSV (Excel's UTF-8 BOM accepted)."""
    path = Path(path)
    if not path.exists():
        raise InputError("decisions file does not exist", path)
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle))
        else:
            try:
                features = json.loads(path.read_text(encoding="utf-8"))["features"]
                rows = [f.get("properties") for f in features]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise InputError("not a GeoJSON FeatureCollection", path) from None
            empty = next((n for n, row in enumerate(rows, start=1) if not isinstance(row, dict)), None)
            if empty is not None:
                raise InputError(f"decision {empty} has no properties (it needs id, review_status and run)", path)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8-sig")
            line = "?"
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
        raise InputError(f"line {line} is not UTF-8 text; export the decisions from the review page, which writes "
                         "UTF-8, or save the file as UTF-8", path) from None  # fmt: skip
    decisions = {}
    for number, row in enumerate(rows, start=1):
        cid, status = row.get("id"), row.get("review_status")
        try:
            cid = int(cid)
        except (TypeError, ValueError):
            raise InputError(f"decision {number}: id {cid!r} is not a candidate id", path) from None
        if status not in STATUSES:
            raise InputError(f"candidate {cid}: unknown review_status {status!r} (expected {list(STATUSES)})", path)
        decisions[cid] = {"status": status, "run": row.get("run") or None, "x": row.get("x"), "y": row.get("y")}
    return decisions


def _check_binding(decisions: dict[int, dict], table: dict, run: str, path: Path) -> None:
    """Refuse decisions exported from another run, or whose coordinates are not those of the candidate."""
    if not decisions:
        raise InputError("holds no decisions; export them from this run's review page", path)
    runs = {d["run"] for d in decisions.values()}
    if None in runs:
        raise InputError("decisions carry no run id; export them again from this run's review page", path)
    if runs != {run}:
        other = sorted(r for r in runs if r != run)[0]
        raise InputError(f"decisions belong to run {other}, not to this run ({run})", path)
    index = {int(i): k for k, i in enumerate(np.asarray(table["id"]).astype(int))}
    for cid, decision in decisions.items():
        if decision["x"] in (None, "") or cid not in index:
            continue
        k = index[cid]
        x, y = float(decision["x"]), float(decision["y"])
        tx, ty = float(table["x"][k]), float(table["y"][k])
        if not (np.isclose(x, tx, rtol=1e-9, atol=1e-6) and np.isclose(y, ty, rtol=1e-9, atol=1e-6)):
            raise InputError(f"candidate {cid}: decision at ({x}, {y}) but the candidate is at ({tx}, {ty})", path)


def merge_decisions(out_dir: str | Path, decisions_path: str | Path) -> dict[str, int]:
    """Write review decisions into the run's candidates.gpkg, rewritten atomically with its coverage and, where
    areas were derived (hazard_areas.json), its hazard areas derived again with the same rules."""
    gpkg = Path(out_dir) / "candidates.gpkg"
    decisions = read_decisions(decisions_path)
    meta, geometry, table = read_candidates(gpkg)
    manifest_path = Path(out_dir) / "manifest.json"
    if not manifest_path.exists():
        raise InputError("no manifest.json here; decisions cannot be checked against their run", out_dir)
    ids = np.asarray(table["id"]).astype(int)
    unknown = sorted(set(decisions) - set(ids.tolist()))
    if unknown:
        raise InputError(f"decisions for ids {unknown[:5]} that are not in {gpkg.name}", decisions_path)
    _check_binding(decisions, table, run_id(read_manifest(manifest_path)), Path(decisions_path))
    chosen = {cid: d["status"] for cid, d in decisions.items()}
    status = np.array([chosen.get(int(i), s) for i, s in zip(ids, table["review_status"])], dtype=object)
    table["review_status"] = status
    c_meta, _, c_geom, c_fields = pyogrio.raw.read(gpkg, layer="coverage")
    areas = None
    saved = read_settings(out_dir)  # areas were derived here: derive them again from the new decisions
    if saved is not None:
        model = model_of(read_manifest(manifest_path))
        areas = derive_areas(table, meta["crs"], saved[0], model, gpkg)
    with atomic_path(gpkg) as tmp:
        pyogrio.raw.write(tmp, geometry, field_data=list(table.values()), fields=list(table), layer="candidates",
                          driver="GPKG", geometry_type="Point", crs=meta["crs"])  # fmt: skip
        pyogrio.raw.write(tmp, c_geom, field_data=list(c_fields), fields=list(c_meta["fields"]), layer="coverage",
                          driver="GPKG", geometry_type="MultiPolygon", crs=c_meta["crs"], append=True,
                          promote_to_multi=True)  # fmt: skip
        if areas is not None:
            write_area_layer(tmp, areas, meta["crs"])
        write_styles(tmp, ["candidates", "coverage", *(["hazard_areas"] if areas is not None else [])])
    if areas is not None:
        write_area_exports(Path(out_dir), areas, meta["crs"], table, model, saved[1])
    return {s: int((status == s).sum()) for s in STATUSES}
