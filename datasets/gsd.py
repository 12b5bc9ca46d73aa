"""Ground sample distance of imagery that does not state it, and resampling of samples to a working GSD.

Tiles exported from annotation tools carry no georeferencing. Their GSD can be measured from an item of known
size: the axis-aligned box of an L x W rectangle turned by an angle t is (L|cos t| + W|sin t|, L|sin t| +
W|cos t|) metres wide and high, whatever t is, so each box gives one GSD estimate without knowing the angle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np
from ordnance.datasets.records import DatasetError, DetectionDataset, Sample, load_record


def gsd_from_boxes(box_wh_px: np.ndarray, length_m: float, width_m: float) -> np.ndarray:
    """GSD (metres per pixel) implied by each axis-aligned box around an L x W rectangular item.

    Args:
        box_wh_px: (N, 2) box widths and heights in pixels.
        length_m, width_m: The item's length and width in metres (length > width).

    Returns:
        (N,) metres per pixel. With u = |cos t| + |sin t| and v = |cos t| - |sin t| (u^2 + v^2 = 2),
        w + h = (L + W) u / g and |w - h| = (L - W) |v| / g, so g = sqrt(2 / (((w + h) / (L + W))^2 +
        ((w - h) / (L - W))^2)).
    """
    if not length_m > width_m > 0:
        raise ValueError(f"need length > width > 0, got {length_m} x {width_m} m")
    wh = np.asarray(box_wh_px, np.float64).reshape(-1, 2)
    s = (wh[:, 0] + wh[:, 1]) / (length_m + width_m)
    d = (wh[:, 0] - wh[:, 1]) / (length_m - width_m)
    return np.sqrt(2.0 / (s**2 + d**2))


@dataclass(frozen=True)
class GsdEstimate:
    """Per-group GSD estimates from the boxes of one reference class."""

    gsd_m: float
    per_group: dict[str, float]
    n_boxes: dict[str, int]
    spread_m: tuple[float, float]

    def as_dict(self) -> dict:
        return {
            "gsd_m": self.gsd_m,
            "per_group_gsd_m": self.per_group,
            "n_boxes": self.n_boxes,
            "p10_p90_m": list(self.spread_m),
        }


def estimate_gsd(dataset: DetectionDataset, class_name: str, length_m: float, width_m: float) -> GsdEstimate:
    """Median GSD over the boxes of ``class_name``, overall and per group (flight, site).

    Reads each image's size (the boxes are stored normalised). Raises DatasetError when the class has no box.
    """
    if class_name not in dataset.class_names:
        raise DatasetError(f"reference class {class_name!r} is not among {list(dataset.class_names)}")
    label = dataset.class_names.index(class_name)
    by_group: dict[str, list[float]] = defaultdict(list)
    for record in dataset.records:
        keep = record.labels == label
        if not keep.any():
            continue
        height, width = cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE).shape[:2]
        norm = record.boxes_norm[keep]
        wh = (norm[:, 2:] - norm[:, :2]) * np.array([width, height])
        by_group[record.group].extend(gsd_from_boxes(wh, length_m, width_m).tolist())
    if not by_group:
        raise DatasetError(f"no box of class {class_name!r} to measure the GSD from")
    every = np.concatenate([np.array(v) for v in by_group.values()])
    return GsdEstimate(
        gsd_m=float(np.median(every)),
        per_group={g: float(np.median(v)) for g, v in sorted(by_group.items())},
        n_boxes={g: len(v) for g, v in sorted(by_group.items())},
        spread_m=(float(np.percentile(every, 10)), float(np.percentile(every, 90))),
    )


def resample_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize (H, W, C) by ``factor`` (output pixels per input pixel): area averaging when shrinking, as
    the scorer's reads of a finer mosaic average, and bilinear when enlarging."""
    if abs(factor - 1.0) < 1e-6:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def resample_sample(sample: Sample, source_gsd_m: float, target_gsd_m: float) -> Sample:
    """A sample at ``source_gsd_m`` brought to ``target_gsd_m``; boxes scale with the image."""
    if source_gsd_m <= 0 or target_gsd_m <= 0:
        raise ValueError(f"GSDs must be positive, got {source_gsd_m} and {target_gsd_m}")
    factor = source_gsd_m / target_gsd_m
    image = resample_image(sample.image, factor)
    sy, sx = image.shape[0] / sample.image.shape[0], image.shape[1] / sample.image.shape[1]
    boxes = (sample.boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
    return Sample(image, boxes, sample.labels, sample.source, sample.points, sample.point_labels)


def load_at_gsd(record, source_gsd_m: float | None, target_gsd_m: float | None) -> Sample:
    """Load a record and bring it to the working GSD when both GSDs are known (the record's own GSD, when it
    has one, before the dataset's)."""
    sample = load_record(record)
    source_gsd_m = record.gsd_m or source_gsd_m
    if source_gsd_m and target_gsd_m:
        sample = resample_sample(sample, source_gsd_m, target_gsd_m)
    return sample
