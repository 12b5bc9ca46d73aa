"""The review page's images, cut by the scorer from the windows it has already read.

The page needs an overview of each source and an image chip of each candidate worth reviewing. Read afresh, both
decode the whole mosaic a second time, which costs a share of the scoring that grows with the area. The scorer
holds every window in memory at the model's resolution, so it samples the overview pixels and cuts the chips there
and carries them in its checkpoint records (a resumed or cluster run carries them the same way). ``ordnance
score`` stores them beside the candidates (``review_preview.npz``); ``ordnance review build`` takes what it finds
there and reads the source only for what is missing: a chip reaching past its window, a chip below the scorer's
chip floor, the overview of a run scored without it.

Chips are cut only where the model's pixels are at least as fine as the source's (a finer source would give the
reviewer a blurred chip): on a finer mosaic the page reads its chips from the source at full resolution.
"""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path

import numpy as np

OVERVIEW_PX = 1600  # the overview's longer side at most
CHIP_PX = 96  # a chip's side
CHIP_CONTEXT = 2.5  # a chip shows this many times the box's longer side when that exceeds CHIP_PX
PREVIEW_FILE = "review_preview.npz"

log = logging.getLogger(__name__)


class Overview:
    """A small image of a raster, filled window by window as the raster is read: each overview pixel is the mean
    of up to ``samples`` x ``samples`` source pixels spread over its footprint (a preview, not a resampling; the
    scorer takes 2 x 2, a quarter of the work inside its own loop, the page's reading of a source 4 x 4)."""

    def __init__(self, width: int, height: int, overview_px: int = OVERVIEW_PX, dtype: str = "uint8",
                 samples: int = 4) -> None:  # fmt: skip
        scale = min(1.0, overview_px / max(width, height))
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        self.image = np.zeros((3, *shape), np.uint8 if dtype == "uint8" else np.float32)
        # The source row and column where each overview pixel's footprint starts.
        self.ys = np.floor(np.arange(shape[0]) * height / shape[0]).astype(np.int64)
        self.xs = np.floor(np.arange(shape[1]) * width / shape[1]).astype(np.int64)
        footprint = max(1, int(1 / scale))
        self.offsets = np.unique(np.linspace(0, footprint - 1, min(samples, footprint)).astype(np.int64))

    def span(self, core: tuple[int, int, int, int]) -> tuple[slice, slice]:
        """The overview rows and columns whose footprint starts in ``core`` (col0, row0, col1, row1)."""
        rows = np.searchsorted(self.ys, [core[1], core[3]])
        cols = np.searchsorted(self.xs, [core[0], core[2]])
        return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))

    def sample(self, block: np.ndarray, left: float, top: float, core, factor: float = 1.0):
        """The overview pixels of ``core`` from ``block`` (bands, rows, cols), whose pixel (0, 0) lies at source
        column ``left``, row ``top`` and covers ``factor`` source pixels a side. Returns (rows, cols, values), the
        values (bands, len(rows), len(cols)) float32."""
        rows, cols = self.span(core)
        k = len(self.offsets)
        n_r, n_c = rows.stop - rows.start, cols.stop - cols.start
        if n_r <= 0 or n_c <= 0:
            return rows, cols, np.zeros((block.shape[0], 0, 0), np.float32)
        # Two gathers (the sampled rows, then their sampled columns), then the mean over each k x k footprint.
        y = ((self.ys[rows][:, None] + self.offsets - top) / factor).astype(np.int64).ravel()
        x = ((self.xs[cols][:, None] + self.offsets - left) / factor).astype(np.int64).ravel()
        y, x = np.clip(y, 0, block.shape[1] - 1), np.clip(x, 0, block.shape[2] - 1)
        down = block[:, y].reshape(block.shape[0], n_r, k, block.shape[2]).sum(axis=2, dtype=np.float32)
        total = down[:, :, x].reshape(block.shape[0], n_r, n_c, k).sum(axis=3)
        return rows, cols, total / (k * k)

    def add(self, block: np.ndarray, left: int, top: int, core: tuple[int, int, int, int]) -> None:
        """Fill the overview pixels whose footprint starts in ``core`` from ``block`` read at ``left``, ``top``."""
        rows, cols, values = self.sample(block, left, top, core)
        self.image[:, rows, cols] = values


def chip_side(boxes: np.ndarray, chip_px: int = CHIP_PX) -> np.ndarray:
    """Source pixels a chip covers for each box (x0, y0, x1, y1 in source pixels)."""
    longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    return np.maximum(chip_px, CHIP_CONTEXT * longer).astype(np.int64)


def chip_origin(boxes: np.ndarray, width: int, height: int, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source column and row of each chip's top-left corner: the square of ``side`` centred on its box, the centre
    kept on the raster (a box centred on the padding beyond the edge is cut at the edge)."""
    cx = np.clip((boxes[:, 0] + boxes[:, 2]) / 2, 0, width - 1)
    cy = np.clip((boxes[:, 1] + boxes[:, 3]) / 2, 0, height - 1)
    return np.round(cx - side / 2).astype(np.int64), np.round(cy - side / 2).astype(np.int64)


def chip_steps(side: int, chip_px: int = CHIP_PX) -> np.ndarray:
    """Source pixel offsets sampled along a chip's side (nearest neighbour; 0 .. side-1 when side == chip_px)."""
    return np.floor((np.arange(chip_px) + 0.5) * side / chip_px).astype(np.int64)


def window_chips(image: np.ndarray, col_off: int, row_off: int, factor: float, boxes: np.ndarray, width: int,
                 height: int, chip_px: int = CHIP_PX) -> list[np.ndarray | None]:  # fmt: skip
    """Chips (chip_px, chip_px, 3) uint8 of ``boxes`` (source pixels) cut from one window's model image (bands,
    S, S), whose pixel (0, 0) is source pixel (``col_off``, ``row_off``) and covers ``factor`` source pixels a side.
    None for a chip that reaches past the window where the raster goes on (the page reads it from the source)."""
    side = chip_side(boxes, chip_px)
    left, top = chip_origin(boxes, width, height, side)
    size_y, size_x = image.shape[1], image.shape[2]
    chips: list[np.ndarray | None] = []
    for i in range(len(boxes)):
        if factor == 1 and side[i] == chip_px:  # 1:1 and inside the raster: a slice of the window, when it holds it
            x0, y0 = left[i] - col_off, top[i] - row_off
            inside = left[i] >= 0 and top[i] >= 0 and left[i] + chip_px <= width and top[i] + chip_px <= height
            if inside and x0 >= 0 and y0 >= 0 and x0 + chip_px <= size_x and y0 + chip_px <= size_y:
                chips.append(image[:3, y0 : y0 + chip_px, x0 : x0 + chip_px].transpose(1, 2, 0))
                continue
        steps = chip_steps(int(side[i]), chip_px)
        sx, sy = left[i] + steps, top[i] + steps  # source columns and rows
        mx = np.floor((sx - col_off) / factor).astype(np.int64)
        my = np.floor((sy - row_off) / factor).astype(np.int64)
        on_x, on_y = (sx >= 0) & (sx < width), (sy >= 0) & (sy < height)  # beyond the raster: zeros, as read
        if (on_x & ((mx < 0) | (mx >= size_x))).any() or (on_y & ((my < 0) | (my >= size_y))).any():
            chips.append(None)
            continue
        chip = np.zeros((3, chip_px, chip_px), np.uint8)
        chip[:, np.flatnonzero(on_y)[:, None], np.flatnonzero(on_x)[None, :]] = image[:3, my[on_y]][:, :, mx[on_x]]
        chips.append(chip.transpose(1, 2, 0))
    return chips


CHIP_QUALITY = 95  # JPEG quality of a chip as the scorer stores it (the page's sheets are written at 90)


def encode_chip(chip: np.ndarray) -> str:
    """A (chip_px, chip_px, 3) uint8 chip as base64 JPEG text: a few kB where the raw pixels are 27 kB, so that a
    survey with ten thousand candidates above the chip floor keeps a checkpoint and a preview of tens of MB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(chip, np.uint8)).save(buffer, format="JPEG", quality=CHIP_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_chip(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class ChipStore:
    """The scorer's chips by candidate id, decoded when asked for."""

    def __init__(self, ids: np.ndarray, jpeg: np.ndarray, offsets: np.ndarray) -> None:
        self._where = {int(i): k for k, i in enumerate(ids)}
        self._jpeg, self._offsets = jpeg, offsets

    def __contains__(self, candidate_id: int) -> bool:
        return candidate_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, candidate_id: int) -> np.ndarray | None:
        k = self._where.get(candidate_id)
        if k is None:
            return None
        return decode_chip(self._jpeg[self._offsets[k] : self._offsets[k + 1]].tobytes())


def encode(array: np.ndarray) -> str:
    """A uint8 array as text for a JSON checkpoint record (its shape is stored beside it)."""
    return base64.b64encode(np.ascontiguousarray(array, np.uint8).tobytes()).decode("ascii")


def decode(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(shape)


def write_preview(path: Path, overviews: dict[int, np.ndarray], chip_ids: np.ndarray, chips: list[bytes],
                  chip_floor: float, chip_px: int = CHIP_PX, overview_px: int = OVERVIEW_PX) -> None:  # fmt: skip
    """The scorer's page images: ``overviews`` by source index (3, H, W) uint8, ``chips`` (JPEG bytes of
    chip_px squares) of the candidates ``chip_ids``, stored end to end with their offsets."""
    arrays = {f"overview_{k}": v for k, v in overviews.items()}
    offsets = np.cumsum([0, *map(len, chips)]).astype(np.int64)
    jpeg = np.frombuffer(b"".join(chips), np.uint8)
    with open(path, "wb") as handle:  # np.savez would add ".npz" to a name without it
        np.savez(handle, chip_ids=np.asarray(chip_ids, np.int64), chip_jpeg=jpeg, chip_offsets=offsets,
                 chip_floor=np.float64(chip_floor), chip_px=np.int64(chip_px), overview_px=np.int64(overview_px),
                 **arrays)  # fmt: skip


def read_preview(out_dir: Path, chip_px: int, overview_px: int) -> tuple[dict[int, np.ndarray], ChipStore]:
    """(overviews by source index, chips by candidate id) from a run's preview file, for a page of ``chip_px``
    chips and ``overview_px`` overviews; empty where the file is missing or was cut for other sizes."""
    path = Path(out_dir) / PREVIEW_FILE
    none = ChipStore(np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(1, np.int64))
    if not path.exists():
        return {}, none
    try:
        return _read(path, chip_px, overview_px, none)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # damaged or cut short
        log.warning("%s: unreadable (%s); the page reads its images from the sources", path, str(error)[:120])
        return {}, none


def _read(path: Path, chip_px: int, overview_px: int, none: ChipStore) -> tuple[dict[int, np.ndarray], ChipStore]:
    with np.load(path) as data:
        overviews = {int(k[9:]): data[k] for k in data.files if k.startswith("overview_") and k[9:].isdigit()}
        if int(data["overview_px"]) != overview_px:
            overviews = {}
        chips = none
        if int(data["chip_px"]) == chip_px:
            chips = ChipStore(data["chip_ids"], data["chip_jpeg"], data["chip_offsets"])
    return overviews, chips
