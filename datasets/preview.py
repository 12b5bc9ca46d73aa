"""Contact sheets: PNG grids of images with their boxes drawn, so a person can look at the data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from ordnance.datasets.records import DetectionDataset, load_record

COLOURS = [(230, 60, 60), (60, 120, 240), (240, 200, 40), (60, 200, 90), (200, 80, 220)]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, names, pad: int = 2) -> np.ndarray:
    """A copy of an RGB image with boxes (xyxy px) outlined, a small margin outside each box."""
    canvas = np.ascontiguousarray(image.copy())
    for box, label in zip(np.asarray(boxes).reshape(-1, 4), labels):
        colour = COLOURS[int(label) % len(COLOURS)]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0 - pad, y0 - pad), (x1 + pad, y1 + pad), colour, 1, cv2.LINE_AA)
        if names:
            cv2.putText(
                canvas,
                str(names[int(label)]),
                (x0 - pad, max(y0 - pad - 3, 8)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                colour,
                1,
                cv2.LINE_AA,
            )
    return canvas


def contact_sheet(images: list[np.ndarray], columns: int = 4, cell_px: int = 384) -> np.ndarray:
    """Images (RGB) fitted into square cells of a grid."""
    rows = (len(images) + columns - 1) // columns
    sheet = np.full((rows * (cell_px + 4) + 4, columns * (cell_px + 4) + 4, 3), 255, np.uint8)
    for i, image in enumerate(images):
        scale = cell_px / max(image.shape[:2])
        small = cv2.resize(
            image,
            (round(image.shape[1] * scale), round(image.shape[0] * scale)),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST,
        )
        r, c = divmod(i, columns)
        y, x = 4 + r * (cell_px + 4), 4 + c * (cell_px + 4)
        sheet[y : y + small.shape[0], x : x + small.shape[1]] = small
    return sheet


def preview_dataset(
    dataset: DetectionDataset, path: str | Path, *, n: int = 16, columns: int = 4, cell_px: int = 384, seed: int = 0
) -> Path:
    """Write a contact sheet of ``n`` records (seeded choice, those with boxes first)."""
    rng = np.random.default_rng(seed)
    with_boxes = [i for i, r in enumerate(dataset.records) if len(r.labels)]
    others = [i for i, r in enumerate(dataset.records) if not len(r.labels)]
    chosen = list(rng.permutation(with_boxes))[: n - min(len(others), n // 8)]
    chosen += list(rng.permutation(others))[: n - len(chosen)]
    images = []
    for index in chosen:
        sample = load_record(dataset.records[index])
        images.append(draw_boxes(sample.image, sample.boxes, sample.labels, dataset.class_names))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), contact_sheet(images, columns, cell_px)[..., ::-1])
    return path
