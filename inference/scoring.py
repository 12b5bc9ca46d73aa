"""Score rasters with an exported detector: streaming, seam-safe, georeferenced, resumable.

Windows on the shared tile grid are read on a background thread while ONNX Runtime computes; detections of
each batch are appended to a checkpoint file, so a killed run restarted with the same arguments continues
where it stopped. When every window is done, one global seam merge leaves one point per object, and the
outputs are written under temporary names and renamed.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from ordnance.inference.camera import FrameGeometry, frame_geometry
from ordnance.inference.errors import InputError, OutputError
from ordnance.inference.grid import Tile, tile_grid
from ordnance.inference.merge import MergeSettings, merge_detections
from ordnance.inference.preview import Overview, encode, encode_chip, window_chips
from ordnance.inference.raster import (
    RemoteFile,
    Source,
    check_bands,
    describe,
    open_raster,
    read_tile,
    value_range,
)
from ordnance.inference.session import DetectorSession, open_session
from ordnance.inference.writers import FORMATS
from rasterio.errors import RasterioIOError

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".vrt")
PARTIAL_DIR = ".ordnance-partial"
GPU_READERS = 4  # reader threads per file on a GPU by default
MAX_READERS = 64


@dataclass(frozen=True)
class ScoringJob:
    """One scoring run; mirrors ``ordnance score``.

    Attributes:
        inputs: Files, folders or glob patterns of GeoTIFF/COG/BigTIFF mosaics or JPEG/PNG frames.
        model: The exported ``.onnx`` file with its card.
        out_dir: Output folder; created when absent.
        formats: Any of "gpkg", "geojson", "csv", "kml".
        score_threshold: Overrides the card's operating point when set.
        overlap_px: Overrides the card's recommended overlap (model pixels) when set.
        batch_size: Tiles per ONNX Runtime call; 0 uses the graph's fixed batch, or 1.
        device: "cpu", "cuda" or "tensorrt".
        threads: ONNX Runtime intra-op threads; 0 = one per core.
        gsd_tolerance: Relative GSD difference beyond which windows are resampled to the model's GSD.
        input_gsd_m: Metres per pixel of inputs that carry no georeferencing (frames, exported tiles), when
            known from flight height and camera; they are then resampled to the model's GSD like mosaics.
            Georeferenced inputs always use their own GSD.
        ground_altitude_m: Altitude of the ground above sea level, metres, for photos whose height above ground
            comes from their GNSS altitude (EXIF GPSAltitude) rather than DJI's RelativeAltitude.
        merge: Seam merge rule.
        resume: Continue from a checkpoint of an earlier run with the same arguments.
        max_tiles: Stop after this many windows in this call, leaving a checkpoint and no outputs.
        progress: Show a progress bar.
        cluster: Score the windows on a Ray cluster (``pip install ordnance[cluster]``): "auto" joins the
            cluster that ``ray start`` runs on this machine (or RAY_ADDRESS), or starts one in this process;
            "HOST:PORT" joins a head node; "ray://HOST:PORT" connects through Ray Client. Every worker must be
            able to read the inputs (a shared file system or URLs). None scores in this process.
        workers: Ray workers (each one ONNX Runtime session); 0 = one per node.
        sessions: ONNX Runtime sessions side by side in this process, each with ``threads / sessions`` threads
            and its own reader, taking blocks of windows in turn (on 2 cores, two one-thread sessions score faster
            than one two-thread session: experiments/README.md). The outputs are the same.
        review_preview: Cut the review page's overview and chips from the windows as they are scored
            (:mod:`ordnance.inference.preview`), so that building the page reads the source no more.
        readers: Reader threads per file, each with its own dataset handle, decoding windows ahead of the
            session; 0: one on the CPU, ``GPU_READERS`` on a GPU, which consumes windows faster than one thread
            decodes them.
        fp16: Run the network in float16 (TensorRT only: ``--device tensorrt``). The export's parity gate
            checked the float32 graph, not TensorRT's float16 engine: the manifest says so.
    """

    inputs: tuple[str, ...]
    model: Path
    out_dir: Path
    formats: tuple[str, ...] = FORMATS
    score_threshold: float | None = None
    overlap_px: int | None = None
    batch_size: int = 0
    device: str = "cpu"
    threads: int = 0
    gsd_tolerance: float = 0.15
    input_gsd_m: float | None = None
    ground_altitude_m: float | None = None
    merge: MergeSettings = field(default_factory=MergeSettings)
    resume: bool = True
    max_tiles: int | None = None
    progress: bool = True
    cluster: str | None = None
    workers: int = 0
    sessions: int = 1
    review_preview: bool = True
    readers: int = 0
    fp16: bool = False


@dataclass
class ScoringResult:
    """What a run produced. ``complete`` is False when it stopped at ``max_tiles``."""

    complete: bool
    candidates: dict[str, np.ndarray]
    outputs: dict[str, Path]
    manifest: dict[str, Any]


def expand_inputs(inputs: tuple[str, ...] | list[str]) -> list[Source]:
    """Files, folders (their rasters, sorted), glob patterns and URLs (``https://``, ``s3://``, ``/vsicurl/...``,
    read by windows through GDAL) to a de-duplicated list of inputs."""
    files: list[Path] = []
    remote: dict[str, RemoteFile] = {}
    for item in inputs:
        url = RemoteFile.parse(str(item))
        if url is not None:
            remote.setdefault(url.url, url)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputError("folder holds no GeoTIFF, JPEG or PNG files", path)
            files.extend(found)
        elif path.exists():  # a real file whose name holds * ? [ ] is that file, never a pattern
            files.append(path)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not found:
                raise InputError("pattern matches no files", item)
            files.extend(found)
        else:
            raise InputError("file does not exist", path)
    unique: dict[tuple[int, int], Path] = {}
    for path in files:  # one file under two names (a hard link, a symlink) is scored once
        stat = path.resolve().stat()
        unique.setdefault((stat.st_dev, stat.st_ino), path.resolve())
    names: dict[str, Source] = {}
    for path in [*unique.values(), *remote.values()]:  # outputs name each candidate's source by its file name
        if path.name in names:
            raise InputError(f"has the same file name as {names[path.name]}; rename one or score them apart", path)
        names[path.name] = path
    return list(names.values())


@dataclass
class _FilePlan:
    path: Source
    info: Any
    tiles: list[Tile]
    tile_src_px: int
    scale: float
    scale_range: tuple[float, float] | None
    gsd_note: str
    geometry: FrameGeometry | None = None  # frames with a camera pose: GSD and ground projection
    preview: bool = True  # cut the review page's overview and chips from the scored windows
    readers: int = 1  # reader threads per file


def _plan(path: Source, detector: DetectorSession, job: ScoringJob) -> _FilePlan:
    card = detector.card
    with open_raster(path) as dataset:
        check_bands(dataset, card)
        info = describe(dataset)
        scale_range = value_range(dataset, card)
    scale, note = 1.0, "no GSD (not georeferenced)"
    geometry = None
    source = "mosaic"
    if info.crs_wkt is None and info.pose is not None:
        geometry = frame_geometry(info.pose, info.width, info.height, job.ground_altitude_m)
        if job.input_gsd_m:  # the stated GSD wins over the one derived from the tags
            geometry = dataclasses.replace(
                geometry, gsd_m=float(job.input_gsd_m), note=geometry.note + "; GSD given by --input-gsd-m"
            )
        if geometry.gsd_m:
            info = dataclasses.replace(info, gsd_m=geometry.gsd_m)
            source = "frame (GSD from the camera's height and focal length)"
    if info.crs_wkt is None and job.input_gsd_m:
        info = dataclasses.replace(info, gsd_m=float(job.input_gsd_m))
        source = "frame (GSD given by --input-gsd-m)"
    if info.gsd_m is None:
        log.debug("%s: no CRS or geotransform", path)
    elif card.gsd_m > 0:
        ratio = card.gsd_m / info.gsd_m
        note = f"{source} {info.gsd_m * 100:.2f} cm/px, model {card.gsd_m * 100:.2f} cm/px"
        if abs(ratio - 1) > job.gsd_tolerance:
            scale = ratio
            log.warning("%s: %s; windows are resampled by %.3f", path, note, 1 / ratio)
            note += f"; resampled x{1 / ratio:.3f}"
    overlap = card.overlap_px if job.overlap_px is None else job.overlap_px
    tile_src = max(1, round(card.tile_size_px * scale))
    tiles = tile_grid(info.width, info.height, tile_src, min(round(overlap * scale), tile_src - 1))
    readers = job.readers or (1 if job.device == "cpu" else GPU_READERS)
    return _FilePlan(path, info, tiles, tile_src, scale, scale_range, note, geometry, job.review_preview, readers)


def check_threshold(value: float | None, name: str) -> None:
    """A score threshold must be a finite number in (0, 1]: 0 or below reports every top-K row, above 1 none."""
    if value is not None and not (isinstance(value, int | float) and 0 < value <= 1):
        raise InputError(f"score threshold must be in (0, 1], got {value!r}", name)


MAX_THREADS = 512


def check_settings(job: ScoringJob, tile_size_px: int) -> None:
    """Refuse settings that would silently do something else than asked (InputError naming the option)."""
    if job.overlap_px is not None and not 0 <= job.overlap_px <= tile_size_px // 2:
        raise InputError(
            f"overlap must be 0 to half the model's {tile_size_px} px tile, got {job.overlap_px}", "--overlap-px"
        )
    if not 0 <= job.threads <= MAX_THREADS:
        raise InputError(f"threads must be 0 (one per core) to {MAX_THREADS}, got {job.threads}", "--threads")
    if job.workers < 0:
        raise InputError(f"must be 0 (one per CPU) or more, got {job.workers}", "--workers")
    if job.sessions < 1:
        raise InputError(f"must be at least 1, got {job.sessions}", "--sessions")
    if not 0 <= job.readers <= MAX_READERS:
        raise InputError(f"must be 0 (one on the CPU, {GPU_READERS} on a GPU) to {MAX_READERS}, got {job.readers}",
                         "--readers")  # fmt: skip

    if job.sessions > 1 and job.cluster:
        raise InputError("sessions run in this process; on a cluster give --workers instead", "--sessions")
    if job.workers and not job.cluster:
        raise InputError("workers are Ray workers; give --cluster too", "--workers")
    if job.max_tiles is not None and job.max_tiles < 1:
        raise InputError(f"must be at least 1, got {job.max_tiles}", "--max-tiles")
    if job.batch_size < 0:
        raise InputError(f"must be 0 (the graph's batch) or more, got {job.batch_size}", "--batch-size")
    if not 0 <= job.gsd_tolerance < 1:
        raise InputError(f"must be in [0, 1), got {job.gsd_tolerance}", "--gsd-tolerance")
    if not (isinstance(job.merge.ios_min, int | float) and 0 < job.merge.ios_min <= 1):
        raise InputError(f"must be in (0, 1] (a share of the smaller box), got {job.merge.ios_min!r}", "--merge-ios")
    if job.input_gsd_m is not None and not (isinstance(job.input_gsd_m, int | float) and 0 < job.input_gsd_m < 1):
        raise InputError(f"GSD must be in metres per pixel, in (0, 1), got {job.input_gsd_m!r}", "--input-gsd-m")
    ground = job.ground_altitude_m
    if ground is not None and not (isinstance(ground, int | float) and -500 <= ground <= 9000):
        raise InputError(f"must be metres above sea level, in [-500, 9000], got {ground!r}", "--ground-altitude-m")


def _job_key(job: ScoringJob, detector: DetectorSession, files: list[Source]) -> str:
    stats = [
        (str(p), p.identity()) if isinstance(p, RemoteFile) else (str(p), p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
    ]
    keys = ("score_threshold", "overlap_px", "gsd_tolerance", "input_gsd_m", "ground_altitude_m", "review_preview")
    settings = {k: v for k, v in asdict(job).items() if k in keys}
    text = json.dumps([detector.sha256, stats, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class _Checkpoint:
    """Append-only JSON lines: a header, then one line per scored batch."""

    def __init__(self, path: Path, key: str, resume: bool) -> None:
        self.path = path
        self.done: dict[int, set[int]] = {}
        self.records: list[dict[str, Any]] = []
        self.started_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if resume and path.exists():
            lines = path.read_text(errors="replace").splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:  # a header cut by a kill: start afresh
                header = {}
            if isinstance(header, dict) and header.get("key") == key:
                self.started_utc = header["started_utc"]
                kept = 1
                for line in lines[1:]:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill, and nothing after it counts
                        break
                    self._add(record)
                    kept += 1
                if kept < len(lines):  # drop the torn tail, so that new lines do not follow it
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text("".join(f"{line}\n" for line in lines[:kept]))
                    os.replace(tmp, path)
                log.info("resuming: %d windows already scored", sum(len(v) for v in self.done.values()))
        if not self.records:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "started_utc": self.started_utc}) + "\n")
        self._handle = open(path, "a")
        self._synced = time.monotonic()

    def _add(self, record: dict[str, Any]) -> None:
        self.done.setdefault(record["f"], set()).update(record["t"])
        self.records.append(record)

    def append(self, record: dict[str, Any]) -> None:
        self._add(record)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()  # a killed process loses nothing; fsync (power loss) at most every few seconds
        if time.monotonic() - self._synced > 5.0:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def close(self, remove: bool) -> None:
        self._handle.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _cache_bytes(dataset, cap_mb: int) -> int:
    """GDAL block cache for one pass of row-major windows: windows of one grid row span at most two block
    rows and share one with the next grid row, so 2.5 block rows across the raster's width suffice (GDAL's
    default, 5% of RAM, grows with the mosaic). At least 16 MB, at most ``cap_mb``."""
    block_rows = dataset.block_shapes[0][0] if dataset.block_shapes else 256
    itemsize = max(np.dtype(dtype).itemsize for dtype in dataset.dtypes)
    row_bytes = dataset.width * block_rows * dataset.count * itemsize
    return int(min(max(2.5 * row_bytes, 16 * 2**20), cap_mb * 2**20))


def _reader(
    plan: _FilePlan, card, todo: list[Tile], batch: int, out: queue.Queue, stop: threading.Event, cache_mb: int = 256
):
    """Background thread: read windows, drop empty ones, put batches on the queue."""
    try:
        with open_raster(plan.path) as dataset, rasterio.Env(GDAL_CACHEMAX=_cache_bytes(dataset, cache_mb)):
            images, metas = [], []
            for tile in todo:
                if stop.is_set():
                    return
                try:
                    image, valid = read_tile(dataset, tile, card, plan.scale_range, plan.tile_src_px)
                except RasterioIOError as error:
                    message = f"read failed in window {tile.bounds} (truncated or corrupt file: {error})"
                    raise InputError(message, plan.path) from None
                images.append(image)
                metas.append((tile, valid))
                if len(images) == batch:
                    out.put((np.stack(images), metas))
                    images, metas = [], []
            if images:
                out.put((np.stack(images), metas))
    except BaseException as error:  # handed to the main thread, which raises it
        out.put(error)
        return
    out.put(None)


def _detections(plan: _FilePlan, tile: Tile, valid: np.ndarray, boxes, scores, labels, threshold: float):
    """Detections of one tile in raster pixels, as rows [x0, y0, x1, y1, score, label, in_core]."""
    size = valid.shape[0]
    keep = scores >= threshold
    boxes, scores, labels = boxes[keep].astype(np.float64), scores[keep], labels[keep]
    cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2).astype(int), 0, size - 1)
    cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2).astype(int), 0, size - 1)
    on_data = valid[cy, cx]
    boxes, scores, labels = boxes[on_data], scores[on_data], labels[on_data]
    factor = plan.tile_src_px / size
    boxes = boxes * factor + np.array([tile.col_off, tile.row_off] * 2)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    x0, y0, x1, y1 = tile.core
    core = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
    return np.c_[boxes, scores, labels, core].tolist()


def _core_cells(plan: _FilePlan, tile: Tile, valid: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
    """Source pixels per model pixel, and the window's core in the model pixels of ``valid``."""
    factor = plan.tile_src_px / valid.shape[0]
    x0, y0, x1, y1 = ((np.array(tile.core) - [tile.col_off, tile.row_off] * 2) / factor).round().astype(int)
    return factor, (int(x0), int(y0), int(x1), int(y1))


def _valid_core_px(plan: _FilePlan, tile: Tile, valid: np.ndarray) -> float:
    factor, (x0, y0, x1, y1) = _core_cells(plan, tile, valid)
    return float(valid[y0:y1, x0:x1].sum()) * factor**2


def _valid_core_shape(plan: _FilePlan, tile: Tile, valid: np.ndarray) -> str | None:
    """The part of a window's core that holds data, in source pixels (WKB, hex), where some of the core holds
    none (nodata, masked or transparent pixels, beyond the raster); None where all of it does. The coverage layer
    is built from these, so ground without imagery is never reported as scanned."""
    import shapely
    from rasterio.features import shapes
    from rasterio.transform import Affine

    factor, (x0, y0, x1, y1) = _core_cells(plan, tile, valid)
    core = np.ascontiguousarray(valid[y0:y1, x0:x1])
    if core.all():
        return None
    to_source = Affine(factor, 0, tile.col_off + x0 * factor, 0, factor, tile.row_off + y0 * factor)
    parts = [shapely.geometry.shape(g) for g, _ in shapes(core.astype(np.uint8), mask=core, transform=to_source)]
    shape = shapely.intersection(shapely.union_all(parts), shapely.box(*tile.core)) if parts else shapely.Polygon()
    return shapely.to_wkb(shape, hex=True)


def score(job: ScoringJob) -> ScoringResult:
    """Run a scoring job. See :class:`ScoringJob`; outputs are described in README.md."""
    started = time.perf_counter()
    files = expand_inputs(job.inputs)
    if job.fp16 and job.device != "tensorrt":
        raise InputError("float16 runs through TensorRT (--device tensorrt); the CPU and CUDA providers run the "
                         "exported graph's own precision", "--fp16")  # fmt: skip
    detector = open_session(job.model, device=job.device, threads=job.threads, fp16=job.fp16)
    card = detector.card
    check_threshold(job.score_threshold, "--score-threshold")
    check_settings(job, card.tile_size_px)
    unknown = sorted(set(job.formats) - set(FORMATS))
    if unknown:
        raise OutputError(f"unknown output formats {unknown}; choose from {list(FORMATS)}", job.out_dir)
    _check_writable(Path(job.out_dir))
    lock = _lock(Path(job.out_dir))
    try:
        return _score_locked(job, files, detector, started)
    finally:
        Path(lock.name).unlink(missing_ok=True)
        lock.close()


def _lock(out_dir: Path):
    """An exclusive lock on the output folder for the whole run (released when the process ends, even killed)."""
    import fcntl

    path = out_dir / ".ordnance-lock"
    while True:
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputError(
                "another 'ordnance score' is writing to this folder; wait for it or choose another", out_dir
            ) from None
        try:  # a scorer that finished meanwhile removed the file it held: lock the one now at the path
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def _score_locked(job: ScoringJob, files: list[Source], detector: DetectorSession, started: float) -> ScoringResult:
    from ordnance.inference.outputs import build_outputs  # the writers, after the heavy part

    card = detector.card
    plans = [_plan(p, detector, job) for p in files]
    plain = [p.path for p in plans if p.info.crs_wkt is None]
    if plain and len(plain) < len(plans):
        geo = next(p.path for p in plans if p.info.crs_wkt is not None)
        raise InputError(
            f"is not georeferenced but {geo.name} is: pixel and map coordinates cannot share one output; "
            "score them in separate runs",
            plain[0],
        )
    for plan in plans:
        if plan.geometry is not None and not plan.geometry.projected:
            log.warning("%s: candidates %s", plan.path, plan.geometry.note)
    unplaced = [p.path for p in plans if p.info.crs_wkt is None and p.geometry is None]
    if unplaced:
        which = (
            str(unplaced[0]) if len(unplaced) == 1 else f"{len(unplaced)} of {len(plans)} inputs, e.g. {unplaced[0]}"
        )
        log.warning("%s: no CRS, geotransform or GNSS position; candidates get pixel coordinates only", which)
    key = _job_key(job, detector, files)
    checkpoint = _Checkpoint(Path(job.out_dir) / PARTIAL_DIR / f"{key}.jsonl", key, job.resume)
    threshold = card.score_threshold if job.score_threshold is None else job.score_threshold
    if job.score_threshold is None and card.operating_point != "validated":
        log.warning(
            "%s: the card's score threshold %.3f was not validated to reach the recipe's precision (operating "
            "point: %s); check it against your own truth or pass --score-threshold",
            job.model,
            card.score_threshold,
            card.operating_point,
        )
    batch = detector.fixed_batch or max(1, job.batch_size)
    timings = {"infer_s": 0.0, "wait_s": 0.0}
    budget = job.max_tiles
    cluster = None
    try:
        todo = {}
        for index, plan in enumerate(plans):
            todo[index] = [t for t in plan.tiles if t.index not in checkpoint.done.get(index, set())]
            if budget is not None:
                todo[index], budget = todo[index][:budget], budget - len(todo[index][:budget])
        if job.cluster:
            from ordnance.inference.cluster import score_on_ray

            cluster = score_on_ray(job, plans, todo, detector, batch, threshold, checkpoint, timings)
        elif job.sessions > 1:
            _score_sessions(job, plans, todo, batch, threshold, checkpoint, timings)
        else:
            for index, plan in enumerate(plans):
                _score_file(index, plan, todo[index], detector, batch, threshold, checkpoint, timings, job.progress)
    finally:
        complete = all(len(checkpoint.done.get(i, ())) == len(p.tiles) for i, p in enumerate(plans))
        checkpoint.close(remove=False)
    if not complete:
        log.warning("stopped after max_tiles=%s; run again with the same arguments to resume", job.max_tiles)
        return ScoringResult(False, {}, {}, {})
    result = build_outputs(job, detector, plans, checkpoint, threshold, timings, started, cluster)
    checkpoint.path.unlink(missing_ok=True)
    if not any(checkpoint.path.parent.iterdir()):
        checkpoint.path.parent.rmdir()
    return result


def file_records(plan: _FilePlan, index: int, todo: list[Tile], detector: DetectorSession, batch: int,
                 threshold: float, timings: dict[str, float]) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Score windows of one file: read on a background thread, run, and yield one checkpoint record per batch
    ({"f": file index, "t": window indices, "d": detections, "skip": windows without data, "px": valid core
    pixels, "cover": [window index, WKB] of cores that hold data only in part}; with the plan's preview also
    "o": overview pixels [row0, row1, col0, col1, data] of each window's core and "c": chips [position in "d",
    data] of detections at or above the chip floor, half the card's threshold: :mod:`ordnance.inference.preview`).
    The same records whichever process computes them."""
    if not todo:
        return
    overview = Overview(plan.info.width, plan.info.height, samples=2) if plan.preview else None
    factor = plan.tile_src_px / detector.card.tile_size_px  # source pixels per model pixel
    # chips where the model's pixels are at least as fine as the source's; a finer source is read at full resolution
    chip_floor = detector.card.score_threshold / 2 if plan.preview and factor <= 1 + 1e-6 else math.inf
    stop = threading.Event()
    # Reader threads, each with its own dataset handle and a contiguous run of the windows (GDAL decodes without the
    # GIL): one keeps a CPU session busy, a GPU session needs several.
    readers = max(1, min(plan.readers, len(todo)))
    bounds = np.linspace(0, len(todo), readers + 1).round().astype(int)
    batches: queue.Queue = queue.Queue(maxsize=3 * readers)
    threads = [
        threading.Thread(
            target=_reader, args=(plan, detector.card, todo[a:b], batch, batches, stop), daemon=True, name=f"reader-{k}"
        )
        for k, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while True:
            waited = time.perf_counter()
            item = batches.get()
            timings["wait_s"] += time.perf_counter() - waited
            if item is None:
                running -= 1
                if running == 0:
                    break
                continue
            if isinstance(item, BaseException):
                raise item
            images, metas = item
            run = [i for i, (_, valid) in enumerate(metas) if valid.any()]
            outputs = None
            if run:
                tick = time.perf_counter()
                outputs = _run_padded(detector, images[run], batch)
                timings["infer_s"] += time.perf_counter() - tick
            record = {"f": index, "t": [t.index for t, _ in metas], "d": [], "skip": [], "px": 0.0}
            for slot, (tile, valid) in enumerate(metas):
                if slot not in run:
                    record["skip"].append(tile.index)
                    continue
                k = run.index(slot)
                rows = _detections(plan, tile, valid, *(o[k] for o in outputs), threshold)
                if overview is not None:
                    tick = time.perf_counter()
                    _preview(record, overview, images[slot], tile, factor, rows, chip_floor, plan.info)
                    timings["preview_s"] = timings.get("preview_s", 0.0) + time.perf_counter() - tick
                record["d"].extend([tile.index, *row] for row in rows)
                record["px"] += _valid_core_px(plan, tile, valid)
                partial = _valid_core_shape(plan, tile, valid)
                if partial is not None:
                    record.setdefault("cover", []).append([tile.index, partial])
            yield record
    finally:
        stop.set()
        for thread in threads:
            while thread.is_alive():
                try:
                    batches.get_nowait()
                except queue.Empty:
                    thread.join(0.05)


def _preview(record: dict, overview: Overview, image: np.ndarray, tile: Tile, factor: float, rows: list, chip_floor,
             info) -> None:  # fmt: skip
    """Add one window's overview pixels and the chips of its detections (``rows``, before they join the record's
    "d") to ``record``."""
    found, cols, values = overview.sample(image, tile.col_off, tile.row_off, tile.core, factor)
    if values.size:
        record.setdefault("o", []).append([found.start, found.stop, cols.start, cols.stop, encode(values)])
    wanted = [i for i, row in enumerate(rows) if row[4] >= chip_floor]
    if not wanted:
        return
    boxes = np.array([rows[i][:4] for i in wanted], np.float64)
    chips = window_chips(image, tile.col_off, tile.row_off, factor, boxes, info.width, info.height)
    first = len(record["d"])
    record.setdefault("c", []).extend(
        [first + i, encode_chip(chip)] for i, chip in zip(wanted, chips) if chip is not None
    )


def _score_file(index, plan, todo, detector, batch, threshold, checkpoint, timings, progress) -> None:
    from tqdm import tqdm

    if not todo:
        return
    done_before = len(checkpoint.done.get(index, ()))
    with tqdm(total=len(plan.tiles), initial=done_before, unit="tile", desc=plan.path.name, disable=not progress,
              dynamic_ncols=True) as bar:  # fmt: skip
        for record in file_records(plan, index, todo, detector, batch, threshold, timings):
            checkpoint.append(record)
            bar.update(len(record["t"]))


BLOCKS_PER_WORKER = 4  # blocks per worker of a large file at least, so that the last blocks finish together
MAX_BLOCK = 64  # windows per block at most: a lost cluster worker costs at most this much work again
WHOLE_FILE = 16  # a file of at most this many windows (a frame, a small mosaic) is one block


def window_blocks(todo: dict[int, list[Tile]], workers: int, batch: int) -> deque[tuple[int, list[Tile]]]:
    """Windows to do, cut into blocks of consecutive windows of one file (neighbours share the raster's blocks):
    a small file whole, a large one in whole numbers of batches, at least ``BLOCKS_PER_WORKER`` per worker."""
    blocks: deque[tuple[int, list[Tile]]] = deque()
    for index, tiles in todo.items():
        if not tiles:
            continue
        size = min(MAX_BLOCK, math.ceil(len(tiles) / (BLOCKS_PER_WORKER * workers)))
        size = max(batch, math.ceil(size / batch) * batch)
        if len(tiles) <= WHOLE_FILE:
            size = len(tiles)
        blocks.extend((index, tiles[i : i + size]) for i in range(0, len(tiles), size))
    return blocks


def _score_sessions(job: ScoringJob, plans, todo, batch: int, threshold: float, checkpoint, timings) -> None:
    """Several ONNX Runtime sessions in this process, one thread each taking blocks of windows in turn."""
    from tqdm import tqdm

    per_session = max(1, (job.threads or os.cpu_count() or 1) // job.sessions)
    sessions = [open_session(job.model, device=job.device, threads=per_session, fp16=job.fp16)
                for _ in range(job.sessions)]  # fmt: skip
    blocks = window_blocks(todo, job.sessions, batch)
    lock = threading.Lock()
    failed: list[BaseException] = []
    total = sum(len(p.tiles) for p in plans)
    done = sum(len(v) for v in checkpoint.done.values())
    bar = tqdm(total=total, initial=done, unit="tile", desc=f"{job.sessions} sessions", disable=not job.progress,
               dynamic_ncols=True)  # fmt: skip

    stop = threading.Event()  # the calling thread is leaving (Ctrl-C): take no block and write no record more

    def work(session: DetectorSession) -> None:
        own = {"infer_s": 0.0, "wait_s": 0.0}
        try:
            while True:
                with lock:
                    if failed or stop.is_set() or not blocks:
                        break
                    index, tiles = blocks.popleft()
                for record in file_records(plans[index], index, tiles, session, batch, threshold, own):
                    with lock:
                        if stop.is_set():
                            break
                        checkpoint.append(record)
                        bar.update(len(record["t"]))
        except BaseException as error:  # raised again in the calling thread
            with lock:
                failed.append(error)
        with lock:
            for key in own:
                timings[key] = timings.get(key, 0.0) + own[key] / job.sessions  # wall-clock shares, summed

    runners = [threading.Thread(target=work, args=(s,), name=f"session-{k}") for k, s in enumerate(sessions)]
    try:
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
    except BaseException:
        stop.set()
        for runner in runners:  # each ends with the batch it is running; the checkpoint is still open
            if runner.is_alive():
                runner.join()
        raise
    finally:
        bar.close()
    if failed:
        raise failed[0]


def _run_padded(detector: DetectorSession, images: np.ndarray, batch: int):
    """Run in chunks of the graph's batch, padding the last chunk when the batch is fixed."""
    fixed = detector.fixed_batch
    n = len(images)
    if fixed and n % fixed:
        pad = np.zeros((fixed - n % fixed, *images.shape[1:]), dtype=images.dtype)
        images = np.concatenate([images, pad])
    step = fixed or batch
    parts = [detector.run(images[i : i + step]) for i in range(0, len(images), step)]
    return tuple(np.concatenate([p[j] for p in parts])[:n] for j in range(3))


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"output folder is not writable ({error.strerror})", out_dir) from None


def merge_records(plans: list[_FilePlan], records: list[dict[str, Any]], settings: MergeSettings,
                  refs: list[tuple[int, int]] | None = None):  # fmt: skip
    """All checkpointed detections, merged per file. Returns (file index, row) with the row as in
    :func:`_detections` plus the other classes the merged duplicates gave (a bit mask of class ids), sorted
    deterministically whatever order the batches ran in. ``refs``, when given, receives for each returned row
    (record index, position in its "d") of the detection kept."""
    merged = []
    for index in range(len(plans)):
        rows = [[*d, r_i, pos] for r_i, r in enumerate(records) if r["f"] == index for pos, d in enumerate(r["d"])]
        if not rows:
            continue
        table = np.array(sorted(rows, key=lambda d: (d[0], -d[5], d[1], d[2])), dtype=np.float64)
        labels = table[:, 6].astype(int)
        into = np.empty(len(table), np.int64)
        keep = merge_detections(table[:, 1:5], table[:, 5], labels, priority=table[:, 7], settings=settings,
                                absorbed=into)  # fmt: skip
        others = np.zeros(len(table), np.int64)
        for dropped in np.flatnonzero((into >= 0) & (labels != labels[np.maximum(into, 0)])):
            others[into[dropped]] |= 1 << labels[dropped]
        merged.extend((index, np.r_[table[k, 1:8], others[k]]) for k in keep)
        if refs is not None:
            refs.extend((int(table[k, 8]), int(table[k, 9])) for k in keep)
    return merged
