"""Seeded test data and models shared by the tests."""

from __future__ import annotations

import numpy as np
from ordnance.training.blobnet import blob_model_bytes  # noqa: F401 (re-exported for the tests)


def gaussian_blobs(
    height: int,
    width: int,
    centres_px,
    *,
    sigma: float = 1.5,
    peak: float = 250.0,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """A (3, H, W) uint8 image with Gaussian blobs centred on the given pixel indices (col, row)."""
    image = np.zeros((height, width), np.float32) if background is None else background.astype(np.float32)
    yy, xx = np.mgrid[-6:7, -6:7]
    kernel = peak * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    for col, row in centres_px:
        r0, r1, c0, c1 = row - 6, row + 7, col - 6, col + 7
        kr0, kc0 = max(0, -r0), max(0, -c0)
        kr1, kc1 = 13 - max(0, r1 - height), 13 - max(0, c1 - width)
        region = image[max(r0, 0) : min(r1, height), max(c0, 0) : min(c1, width)]
        np.maximum(region, kernel[kr0:kr1, kc0:kc1], out=region)
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[None], 3, axis=0)
