"""Contact sheet of the PFM-1 training composites: real items pasted onto other training tiles (top row) and
drawn items on the real empty grass of the training flights (bottom row), at the 5 mm working GSD, with their
boxes (red: ap_mine, blue: uxo). Writes docs/pfm1_composites.png.

    .venv/bin/python experiments/pfm1/preview.py
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from common import REPO, read_split
from ordnance.datasets.composite import CopyPaste, composite, cut_patches
from ordnance.datasets.gsd import load_at_gsd

SOURCE_GSD_M, GSD_M, SIDE = 0.00294, 0.005, 300


def _draw(sample) -> np.ndarray:
    image = np.ascontiguousarray(sample.image[:SIDE, :SIDE, ::-1])
    image = cv2.copyMakeBorder(image, 0, SIDE - image.shape[0], 0, SIDE - image.shape[1], cv2.BORDER_CONSTANT)
    for (x0, y0, x1, y1), label in zip(sample.boxes, sample.labels):
        colour = (0, 0, 255) if label == 0 else (255, 0, 0)
        cv2.rectangle(image, (int(x0) - 3, int(y0) - 3), (int(x1) + 3, int(y1) + 3), colour, 1)
    return image


def main() -> int:
    data = read_split("train")
    samples = [load_at_gsd(r, SOURCE_GSD_M, GSD_M) for r in data.records]
    positives = [s for s in samples if len(s.boxes)]
    empty = [s for s in samples if not len(s.boxes) and s.image[-1, -1].any()]
    patches = cut_patches(positives, 0.4)
    class_ids = {n: i for i, n in enumerate(data.class_names)}
    rng = np.random.default_rng(5)
    real = CopyPaste(p=1.0, real_items=3)
    drawn = CopyPaste(p=1.0, real_items=0, synthetic_items=3, synthetic_names=("pfm1", "pfm1", "pmn", "grenade"))
    picks = rng.choice(len(empty), 10, replace=False)
    top = [_draw(composite(empty[i], patches, real, class_ids, GSD_M, rng)) for i in picks[:5]]
    bottom = [_draw(composite(empty[i], [], drawn, class_ids, GSD_M, rng)) for i in picks[5:]]
    sheet = np.vstack([np.hstack(top), np.hstack(bottom)])
    out = REPO / "docs" / "pfm1_composites.png"
    cv2.imwrite(str(out), sheet)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
