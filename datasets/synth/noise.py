"""Coordinate-hashed noise: the same ground point gets the same value whichever block renders it, so
mosaics written block by block have no seams."""

from __future__ import annotations

import numpy as np

_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash_uniform(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values for integer lattice coordinates (splitmix64 of the packed coordinates)."""
    with np.errstate(over="ignore"):
        z = (ix.astype(np.int64).astype(np.uint64) * _M1) ^ (iy.astype(np.int64).astype(np.uint64) * _M2)
        z ^= np.uint64(seed & 0xFFFFFFFF) * _M3
        z = (z ^ (z >> np.uint64(30))) * _M2
        z = (z ^ (z >> np.uint64(27))) * _M3
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(x0: float, y0: float, width: int, height: int, cell_px: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) over a block whose upper-left pixel is (x0, y0) in scene pixels."""
    xs = (x0 + np.arange(width) + 0.5) / cell_px
    ys = (y0 + np.arange(height) + 0.5) / cell_px
    ix, iy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - ix, ys - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    gx, gy = np.meshgrid(np.arange(ix[0], ix[-1] + 2), np.arange(iy[0], iy[-1] + 2))
    lattice = hash_uniform(gx, gy, seed)
    cx, cy = ix - ix[0], iy - iy[0]
    top = lattice[cy][:, cx] * (1 - fx) + lattice[cy][:, cx + 1] * fx
    bottom = lattice[cy + 1][:, cx] * (1 - fx) + lattice[cy + 1][:, cx + 1] * fx
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32)


def fractal_noise(
    x0: float, y0: float, width: int, height: int, cell_px: float, seed: int, octaves: int = 5, gain: float = 0.5
) -> np.ndarray:
    """Sum of octaves of value noise, normalised to roughly [0, 1]."""
    total = np.zeros((height, width), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(x0, y0, width, height, max(cell_px / 2**octave, 1.0), seed + 7919 * octave)
        norm += amplitude
        amplitude *= gain
    return total / norm


def cell_rngs(x0: int, y0: int, width: int, height: int, cell_px: int, margin_px: int, seed: int):
    """Yield (cell_x, cell_y, rng) for every lattice cell touching the block plus a margin.

    Features scattered per cell with these generators are the same whichever block draws them.
    """
    cx0, cy0 = (x0 - margin_px) // cell_px, (y0 - margin_px) // cell_px
    cx1, cy1 = (x0 + width + margin_px) // cell_px, (y0 + height + margin_px) // cell_px
    for cy in range(cy0, cy1 + 1):
        for cx in range(cx0, cx1 + 1):
            key = int(hash_uniform(np.array([cx]), np.array([cy]), seed)[0] * 2**62)
            yield cx * cell_px, cy * cell_px, np.random.default_rng(key)
