"""Hazard-point metrics: predictions match truth items by centre distance, as deminers count them.

A prediction matches a truth item when its centre lies within the item's tolerance (half its size, with a
floor), greedily by score; each item is matched at most once. Units are whatever the caller uses (pixels for
tiles, metres for mosaics). Shared by training (per-tile validation) and ``ordnance evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely


@dataclass(frozen=True)
class Matches:
    """Result of matching one set of predictions to one set of truth items.

    Attributes:
        scores: (P,) prediction scores.
        true_positive: (P,) whether each prediction matched a truth item.
        duplicate: (P,) the prediction lies on an already matched item (a second hit on one object).
        matched_truth: (P,) index of the matched truth item, or -1.
        n_truth: Number of truth items.
    """

    scores: np.ndarray
    true_positive: np.ndarray
    duplicate: np.ndarray
    matched_truth: np.ndarray
    n_truth: int


def match_points(
    pred_xy: np.ndarray,
    pred_scores: np.ndarray,
    truth_xy: np.ndarray,
    tolerance: np.ndarray | float,
    *,
    pred_labels: np.ndarray | None = None,
    truth_labels: np.ndarray | None = None,
) -> Matches:
    """Greedy matching by descending score within each truth item's tolerance radius.

    Args:
        pred_xy: (P, 2) predicted centres.
        pred_scores: (P,) scores.
        truth_xy: (T, 2) truth centres.
        tolerance: Radius per truth item (T,) or one value.
        pred_labels, truth_labels: When both are given, only same-class pairs match.
    """
    pred_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    truth_xy = np.asarray(truth_xy, np.float64).reshape(-1, 2)
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    n_pred, n_truth = len(pred_xy), len(truth_xy)
    tolerance = np.broadcast_to(np.asarray(tolerance, np.float64), (n_truth,))
    tp = np.zeros(n_pred, bool)
    dup = np.zeros(n_pred, bool)
    matched = np.full(n_pred, -1, np.int64)
    if n_pred and n_truth:
        tree = shapely.STRtree(shapely.points(truth_xy))
        p_idx, t_idx = tree.query(shapely.points(pred_xy), predicate="dwithin", distance=float(tolerance.max()))
        dist = np.hypot(*(pred_xy[p_idx] - truth_xy[t_idx]).T)
        ok = dist <= tolerance[t_idx]
        if pred_labels is not None and truth_labels is not None:
            ok &= np.asarray(pred_labels)[p_idx] == np.asarray(truth_labels)[t_idx]
        p_idx, t_idx, dist = p_idx[ok], t_idx[ok], dist[ok]
        candidates: dict[int, list[tuple[float, int]]] = {}
        for p, t, d in zip(p_idx, t_idx, dist):
            candidates.setdefault(int(p), []).append((float(d), int(t)))
        taken = np.zeros(n_truth, bool)
        for p in np.argsort(-scores, kind="stable"):
            options = sorted(candidates.get(int(p), []))
            free = [t for _, t in options if not taken[t]]
            if free:
                taken[free[0]] = True
                tp[p], matched[p] = True, free[0]
            elif options:
                dup[p] = True
    return Matches(scores, tp, dup, matched, n_truth)


def summarise(
    matches: list[Matches],
    *,
    n_images: int | None = None,
    area_ha: float | None = None,
    fa_per_image: tuple[float, ...] = (0.1, 1.0),
    fa_per_ha: tuple[float, ...] = (1.0, 5.0, 10.0),
    threshold: float | None = None,
) -> dict[str, float]:
    """Recall, precision, F1, AP over score thresholds and recall at fixed false-alarm rates.

    Duplicates count as false alarms. ``threshold`` picks the operating point for recall/precision/F1
    (default: every prediction).
    """
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    tp = np.concatenate([m.true_positive for m in matches]) if matches else np.zeros(0, bool)
    dup = np.concatenate([m.duplicate for m in matches]) if matches else np.zeros(0, bool)
    n_truth = sum(m.n_truth for m in matches)
    order = np.argsort(-scores, kind="stable")
    tp_c, fp_c = np.cumsum(tp[order]), np.cumsum(~tp[order])
    recall_curve = tp_c / max(n_truth, 1)
    precision_curve = tp_c / np.maximum(tp_c + fp_c, 1)
    at = scores >= (threshold if threshold is not None else -np.inf)
    n_tp, n_fp = int(tp[at].sum()), int((~tp[at]).sum())
    recall = n_tp / max(n_truth, 1)
    precision = n_tp / max(n_tp + n_fp, 1)
    out = {
        "n_truth": n_truth,
        "n_pred": int(at.sum()),
        "recall": recall,
        "precision": precision,
        "f1": 2 * recall * precision / max(recall + precision, 1e-12),
        "ap": _average_precision(recall_curve, precision_curve),
        "duplicate_rate": float(dup[at].sum()) / max(n_tp, 1),
    }
    for rates, denominator, unit in ((fa_per_image, n_images, "per_image"), (fa_per_ha, area_ha, "per_ha")):
        if not denominator:
            continue
        if unit == "per_image":
            out["false_alarms_per_image"] = n_fp / denominator
        else:
            out["false_alarms_per_ha"] = n_fp / denominator
        for rate in rates:
            allowed = fp_c <= rate * denominator
            out[f"recall_at_{rate:g}_fa_{unit}"] = float(recall_curve[allowed].max()) if allowed.any() else 0.0
    return out


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (all-point interpolation, as in COCO/VOC)."""
    if len(recall) == 0:
        return 0.0
    r = np.r_[0.0, recall, recall[-1]]
    p = np.r_[1.0, precision, 0.0]
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def pr_curve(matches: list[Matches]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, recall, precision) over descending scores."""
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    tp = np.concatenate([m.true_positive for m in matches]) if matches else np.zeros(0, bool)
    n_truth = sum(m.n_truth for m in matches)
    order = np.argsort(-scores, kind="stable")
    tp_c = np.cumsum(tp[order])
    return scores[order], tp_c / max(n_truth, 1), tp_c / np.arange(1, len(order) + 1)
