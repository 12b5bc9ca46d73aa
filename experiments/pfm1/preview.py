"""Contact sheets of the PFM-1 training composites at the recipe's working GSD (2.94 mm).

docs/pfm1_composites.png: real items pasted onto other training tiles (top row) and drawn items on the real empty
grass of the training flights (bottom row), with their boxes (red: ap_mine, blue: uxo).
docs/pfm1_closeups.png: real PFM-1 mines of the training flights (top row) beside drawn PFM-1 pasted onto the
training flights' empty grass (bottom row), 80 x 80 px each, shown 2x.

    .venv/bin/python experiments/pfm1/preview.py
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from common import REPO, read_split
from ordnance.datasets.composite import CopyPaste, composite, cut_patches, paste_drawn
from ordnance.datasets.gsd import load_at_gsd

GSD_M, SIDE, CLOSE = 0.00294, 300, 80


def _draw(sample) -> np.ndarray:
    image = np.ascontiguousarray(sample.image[:SIDE, :SIDE, ::-1])
    image = cv2.copyMakeBorder(image, 0, SIDE - image.shape[0], 0, SIDE - image.shape[1], cv2.BORDER_CONSTANT)
    for (x0, y0, x1, y1), label in zip(sample.boxes, sample.labels):
        colour = (0, 0, 255) if label == 0 else (255, 0, 0)
        cv2.rectangle(image, (int(x0) - 3, int(y0) - 3), (int(x1) + 3, int(y1) + 3), colour, 1)
    return image


def _centred(image: np.ndarray, box) -> np.ndarray | None:
    """The CLOSE x CLOSE window of ``image`` (RGB) centred on ``box``, BGR, or None at the image's edge."""
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    half = CLOSE // 2
    crop = image[cy - half : cy + half, cx - half : cx + half]
    if cy < half or cx < half or crop.shape[:2] != (CLOSE, CLOSE):
        return None
    return np.ascontiguousarray(np.clip(crop, 0, 255).astype(np.uint8)[..., ::-1])


def _row(crops: list[np.ndarray]) -> np.ndarray:
    return np.hstack([cv2.resize(c, (2 * CLOSE, 2 * CLOSE), interpolation=cv2.INTER_NEAREST) for c in crops])


def main() -> int:
    data = read_split("train")
    samples = [load_at_gsd(r, GSD_M, GSD_M) for r in data.records]
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
    out = REPO / "docs" / "pfm1_composites.png"
    cv2.imwrite(str(out), np.vstack([np.hstack(top), np.hstack(bottom)]))
    print(out)

    real_crops = []
    for sample in rng.permutation(np.array(positives, dtype=object)):
        for box, label in zip(sample.boxes, sample.labels):
            crop = _centred(sample.image, box) if label == class_ids["ap_mine"] else None
            if crop is not None:
                real_crops.append(crop)
                break
        if len(real_crops) == 8:
            break
    one_pfm1 = CopyPaste(p=1.0, real_items=0, synthetic_items=1, synthetic_names=("pfm1",), scale=(0.9, 1.1))
    drawn_crops = []
    for i in rng.permutation(len(empty)):
        image = empty[i].image.astype(np.float32)
        boxes, labels = [], []
        paste_drawn(image, boxes, labels, one_pfm1, class_ids, GSD_M, rng, 1)
        crop = _centred(image, boxes[0]) if boxes else None
        if crop is not None:
            drawn_crops.append(crop)
        if len(drawn_crops) == 8:
            break
    out = REPO / "docs" / "pfm1_closeups.png"
    cv2.imwrite(str(out), np.vstack([_row(real_crops), _row(drawn_crops)]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
