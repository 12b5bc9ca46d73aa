"""Seam merge: one global de-duplication of detections across tile overlaps, whatever class each window gave.

Neighbours are found with a spatial index (shapely STRtree), never by comparing all pairs, so it scales
to hundreds of thousands of candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely


@dataclass(frozen=True)
class MergeSettings:
    """When two detections are one object.

    Attributes:
        ios_min: Intersection over the smaller box at or above which they are one object.
        centre_frac: Or when their centres lie closer than this fraction of the smaller box's longer side.
        class_aware: Merge only detections of one class. Off by default: one object seen as two classes from
            two sides of a seam is one hazard, kept once with its best class (the scorer records the others).
    """

    ios_min: float = 0.5
    centre_frac: float = 0.5
    class_aware: bool = False


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    priority: np.ndarray | None = None,
    settings: MergeSettings = MergeSettings(),
    absorbed: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the detections to keep, one per object, best first.

    Args:
        boxes: (N, 4) xyxy in one pixel frame (the whole raster).
        scores: (N,) scores.
        labels: (N,) class ids; with ``settings.class_aware`` only detections of one class are merged.
        priority: (N,) optional ranks that win before scores; the scorer gives 1 to detections whose
            centre lies in their tile's core (seen whole), 0 to those near a tile edge.
        settings: Merge rule.
        absorbed: Optional (N,) int array filled in place: for each dropped detection, the index of the kept
            one it was merged into; -1 for kept detections.

    Returns:
        Indices into the inputs, sorted by (priority, score) descending. Within each group of duplicates
        only the best is kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    priority = np.zeros(n) if priority is None else np.asarray(priority, dtype=np.float64)
    order = np.lexsort((np.arange(n), -scores, -priority))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep_pair = (left < right) & ((labels[left] == labels[right]) | (not settings.class_aware))
    left, right = left[keep_pair], right[keep_pair]
    duplicate = _same_object(boxes[left], boxes[right], settings)
    left, right = left[duplicate], right[duplicate]

    # Greedy in rank order: a detection survives unless a better survivor duplicates it.
    better = np.where(rank[left] < rank[right], left, right)
    worse = np.where(rank[left] < rank[right], right, left)
    by_worse = np.argsort(rank[worse], kind="stable")
    better, worse = better[by_worse], worse[by_worse]
    starts = np.searchsorted(rank[worse], np.arange(n), side="left")
    ends = np.searchsorted(rank[worse], np.arange(n), side="right")
    alive = np.ones(n, dtype=bool)
    into = np.full(n, -1, dtype=np.int64)
    for r, index in enumerate(order):
        rivals = better[starts[r] : ends[r]]
        if rivals.size and alive[rivals].any():
            alive[index] = False
            living = rivals[alive[rivals]]
            into[index] = living[np.argmin(rank[living])]
    if absorbed is not None:
        absorbed[:] = into
    return order[alive[order]]


def _same_object(a: np.ndarray, b: np.ndarray, settings: MergeSettings) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ios = iw * ih / np.clip(np.minimum(area_a, area_b), 1e-9, None)
    centre_a = (a[:, :2] + a[:, 2:]) / 2
    centre_b = (b[:, :2] + b[:, 2:]) / 2
    distance = np.hypot(*(centre_a - centre_b).T)
    side_a = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    side_b = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return (ios >= settings.ios_min) | (distance <= settings.centre_frac * np.minimum(side_a, side_b))
