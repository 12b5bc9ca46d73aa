"""The one tile grid shared by training chips and the scorer.

Pixel coordinates are continuous with the edge convention: pixel (col, row) covers
[col, col + 1) x [row, row + 1), so the centre of pixel 0 is at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One window of the grid, in source pixels.

    Attributes:
        index: Position in row-major grid order.
        col_off, row_off: Upper-left corner of the window.
        width, height: Window size; the last row or column is shifted inwards so windows keep the full
            tile size unless the raster is smaller than one tile.
        core: (x0, y0, x1, y1) kept region: the grid's core regions tile the raster exactly once, with
            boundaries in the middle of each overlap.
    """

    index: int
    col_off: int
    row_off: int
    width: int
    height: int
    core: tuple[float, float, float, float]

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the window."""
        return self.col_off, self.row_off, self.col_off + self.width, self.row_off + self.height


def _offsets(length: int, tile_px: int, stride: int) -> list[int]:
    if length <= tile_px:
        return [0]
    offsets = list(range(0, length - tile_px, stride))
    offsets.append(length - tile_px)
    return offsets


def _cores(offsets: list[int], tile_px: int, length: int) -> list[tuple[float, float]]:
    edges = [0.0]
    for left, right in pairwise(offsets):
        edges.append((right + min(left + tile_px, length)) / 2.0)
    edges.append(float(length))
    return list(pairwise(edges))


def tile_grid(width: int, height: int, tile_px: int, overlap_px: int) -> list[Tile]:
    """Cut a raster of ``width`` x ``height`` pixels into overlapping square tiles.

    Args:
        width, height: Raster size in pixels.
        tile_px: Tile side in pixels.
        overlap_px: Overlap between neighbouring tiles in pixels, 0 <= overlap_px < tile_px.

    Returns:
        Tiles in row-major order. Every pixel lies in at least one window and in exactly one core.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    if not 0 <= overlap_px < tile_px:
        raise ValueError(f"overlap_px must be in [0, {tile_px}), got {overlap_px}")
    stride = tile_px - overlap_px
    xs, ys = _offsets(width, tile_px, stride), _offsets(height, tile_px, stride)
    x_cores, y_cores = _cores(xs, tile_px, width), _cores(ys, tile_px, height)
    tiles = []
    for y, (cy0, cy1) in zip(ys, y_cores):
        for x, (cx0, cx1) in zip(xs, x_cores):
            tiles.append(
                Tile(
                    index=len(tiles),
                    col_off=x,
                    row_off=y,
                    width=min(tile_px, width),
                    height=min(tile_px, height),
                    core=(cx0, cy0, cx1, cy1),
                )
            )
    return tiles


def in_core(tile: Tile, points_xy: np.ndarray) -> np.ndarray:
    """Which points (N, 2), in raster pixels, lie in the tile's core (half-open: [x0, x1) x [y0, y1))."""
    x0, y0, x1, y1 = tile.core
    x, y = points_xy[:, 0], points_xy[:, 1]
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def box_ioa(boxes: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """Share of each box's area (N, 4 xyxy) that lies inside a window (x0, y0, x1, y1)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wx0, wy0, wx1, wy1 = window
    iw = np.clip(np.minimum(boxes[:, 2], wx1) - np.maximum(boxes[:, 0], wx0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], wy1) - np.maximum(boxes[:, 1], wy0), 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 1e-9, None) * np.clip(boxes[:, 3] - boxes[:, 1], 1e-9, None)
    return iw * ih / area
