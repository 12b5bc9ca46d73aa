"""The one preprocessing step shared by the scorer, training validation and the export parity gate:
an image becomes a uint8 (3, S, S) tile, padded with zeros at the bottom and right, never resized."""

from __future__ import annotations

import numpy as np


def pad_to_tile(image_chw: np.ndarray, tile_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (or crop) a (3, h, w) uint8 image to (3, S, S); returns the tile and its valid mask (S, S)."""
    if image_chw.dtype != np.uint8 or image_chw.ndim != 3 or image_chw.shape[0] != 3:
        raise ValueError(f"expected uint8 (3, h, w), got {image_chw.dtype} {image_chw.shape}")
    h, w = min(image_chw.shape[1], tile_px), min(image_chw.shape[2], tile_px)
    tile = np.zeros((3, tile_px, tile_px), np.uint8)
    valid = np.zeros((tile_px, tile_px), bool)
    tile[:, :h, :w] = image_chw[:, :h, :w]
    valid[:h, :w] = True
    return tile, valid
