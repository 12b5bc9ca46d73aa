"""Frame-dataset evaluation: per-image predictions against YOLO or COCO truth, in pixels.

For frame collections (thermal or oblique frames without a map grid) deminers still count items found and
false alarms, per frame rather than per hectare. Reports COCO AP50 and AP50-95 (faster-coco-eval) and the
hazard-point metrics shared with training and mosaics: a prediction finds an item when its centre lies
within half the item's size (with a floor in pixels). Torch-free.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import yaml
from ordnance.inference.annotations import read_coco_file, read_yolo_labels
from ordnance.inference.errors import InputError
from ordnance.inference.metrics import match_points, pr_curve, summarise

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass(frozen=True)
class FrameTruth:
    """Truth boxes per image, keyed by file name.

    Attributes:
        class_names: Class names in label order.
        images: {file name: (width_px, height_px, boxes (T, 4) xyxy px, labels (T,))}.
        source: Where the truth was read from.
        category_ids: Ids of the classes in results files (COCO category ids; YOLO: label numbers).
        image_ids: COCO image id -> file name (empty for YOLO, whose results name images by file).
    """

    class_names: tuple[str, ...]
    images: dict[str, tuple[int, int, np.ndarray, np.ndarray]]
    source: Path
    category_ids: tuple[int, ...] = ()
    image_ids: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FramePredictions:
    """Predictions per image: {file name: (boxes (P, 4) xyxy px, scores (P,), class names (P,))}."""

    images: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    scored_images: tuple[str, ...] | None  # the frames the run looked at (from its manifest), when known


@dataclass(frozen=True)
class FrameSettings:
    """Matching rule for frames.

    Attributes:
        floor_px: Smallest centre-distance tolerance, pixels.
        size_factor: Tolerance = max(floor_px, size_factor * longest box side).
        score_threshold: Operating point for recall/precision (default: every prediction).
        class_aware: Only same-class predictions find an item (hazard-point metrics).
        fa_per_image: False-alarm rates per frame at which recall is reported.
    """

    floor_px: float = 4.0
    size_factor: float = 0.5
    score_threshold: float | None = None
    class_aware: bool = False
    fa_per_image: tuple[float, ...] = (0.1, 1.0)


def is_frame_truth(path: Path) -> bool:
    """YOLO data.yaml, a YOLO images folder, or a COCO annotation JSON."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in {".yaml", ".yml", ".json"}


def load_frame_truth(path: Path) -> FrameTruth:
    """Read YOLO (data.yaml or an images folder beside labels/) or COCO (annotations .json) truth."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if path.suffix.lower() == ".json":
        return _read_coco(path)
    if path.is_dir():
        return _read_yolo_dirs(path, [path], None)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML ({str(error).splitlines()[0]})", path) from None
    if not isinstance(spec, dict) or "names" not in spec:
        raise InputError("not a YOLO data.yaml (no 'names')", path)
    root = (path.parent / spec.get("path", ".")).resolve()
    dirs = []
    for key in ("train", "val", "test"):
        for entry in [spec[key]] if isinstance(spec.get(key), str) else spec.get(key) or []:
            folder = (root / entry).resolve()
            if not folder.is_dir():  # Roboflow exports sometimes point one level up
                folder = (path.parent / Path(entry).name).resolve()
            if folder.is_dir() and folder not in dirs:
                dirs.append(folder)
    if not dirs:
        raise InputError("none of its train/val/test image folders exist", path)
    names = spec["names"]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return _read_yolo_dirs(path, dirs, names)


def _image_size(path: Path) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                return src.width, src.height
        except rasterio.errors.RasterioIOError:
            raise InputError("not a readable image", path) from None


def _read_yolo_dirs(source: Path, image_dirs: list[Path], names: list[str] | None) -> FrameTruth:
    images: dict[str, tuple[int, int, np.ndarray, np.ndarray]] = {}
    max_label = -1
    for folder in image_dirs:
        labels_dir = folder.parent / "labels" if folder.name == "images" else folder
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            width, height = _image_size(image)
            label_file = labels_dir / f"{image.stem}.txt"
            boxes, labels = read_yolo_labels(label_file) if label_file.exists() else (np.zeros((0, 4)), np.zeros(0))
            labels = labels.astype(np.int64)
            max_label = max(max_label, int(labels.max(initial=-1)))
            if image.name in images:
                raise InputError(f"image name {image.name} appears twice; names must be unique", source)
            images[image.name] = (width, height, boxes * [width, height, width, height], labels)
    if not images:
        raise InputError("no images found", source)
    names = names or [str(i) for i in range(max_label + 1)]
    if max_label >= len(names):
        raise InputError(f"label {max_label} is beyond the {len(names)} class names", source)
    return FrameTruth(tuple(names), images, source, tuple(range(len(names))))


def _read_coco(path: Path) -> FrameTruth:
    coco = read_coco_file(path)
    index = {cid: i for i, cid in enumerate(coco.categories)}
    images = {}
    for image in coco.images:
        labels = np.array([index[int(c)] for c in image.category_ids], np.int64)
        images[Path(image.file_name).name] = (image.width, image.height, image.boxes_px, labels)
    image_ids = {image.id: Path(image.file_name).name for image in coco.images}
    return FrameTruth(tuple(coco.categories.values()), images, path, tuple(coco.categories), image_ids)


def load_frame_predictions(path: Path, truth: FrameTruth) -> FramePredictions:
    """The scorer's candidates (.csv, .gpkg, .geojson: ``source``, ``bbox_px``, ``score``, ``class``) or a
    COCO results list (.json: ``image_id``, ``bbox`` xywh, ``score``, ``category_id``)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if path.suffix.lower() == ".json":
        return _read_coco_results(path, truth)
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        table = {k: [r[k] for r in rows] for k in (rows[0].keys() if rows else ())}
    else:
        layer = "candidates" if path.suffix.lower() == ".gpkg" else None
        try:
            meta, _, _, fields = pyogrio.raw.read(path, layer=layer)
        except Exception as error:  # GDAL errors of every kind
            raise InputError(f"not a readable vector layer ({str(error).splitlines()[0][:160]})", path) from None
        table = dict(zip(meta["fields"], fields))
    missing = {"source", "bbox_px", "score", "class"} - set(table)
    if any(len(v) for v in table.values()) and missing:
        raise InputError(f"not the scorer's candidates: columns {sorted(missing)} are missing", path)
    images: dict[str, list] = {}
    for source, bbox, score, name in zip(
        table.get("source", []), table.get("bbox_px", []), table.get("score", []), table.get("class", [])
    ):
        try:
            box = [float(v) for v in str(bbox).split(",")]
        except ValueError:
            raise InputError(f"bbox_px {bbox!r} is not four numbers", path) from None
        images.setdefault(Path(str(source)).name, []).append((box, float(score), str(name)))
    manifest = path.parent / "manifest.json"
    scored = None
    if manifest.exists():
        scored = tuple(Path(entry["path"]).name for entry in json.loads(manifest.read_text())["inputs"])
    return FramePredictions({k: _stack(v) for k, v in images.items()}, scored)


def _stack(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([r[0] for r in rows], np.float64).reshape(-1, 4)
    return boxes, np.array([r[1] for r in rows], np.float64), np.array([r[2] for r in rows], object)


def _read_coco_results(path: Path, truth: FrameTruth) -> FramePredictions:
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"not valid JSON ({error.msg} at line {error.lineno})", path) from None
    if not isinstance(results, list):
        raise InputError("not a COCO results list ([{image_id, bbox, score, category_id}, ...])", path)
    ids = truth.image_ids
    categories = dict(zip(truth.category_ids, truth.class_names))
    images: dict[str, list] = {}
    for r in results:
        name = ids.get(r["image_id"], str(r["image_id"]))
        if name not in truth.images:
            raise InputError(f"image_id {r['image_id']!r} is not in the truth", path)
        x, y, w, h = r["bbox"]
        if r["category_id"] not in categories:
            raise InputError(f"category_id {r['category_id']!r} is not a truth category", path)
        label = categories[r["category_id"]]
        images.setdefault(name, []).append(([x, y, x + w, y + h], float(r["score"]), label))
    return FramePredictions({k: _stack(v) for k, v in images.items()}, None)


def evaluate_frames(
    predictions: Path, truth: Path, settings: FrameSettings = FrameSettings(), frame_pattern: str | None = None
) -> dict:
    """COCO AP50 / AP50-95 and hazard-point metrics per frame, overall and per class.

    The frames evaluated are those the scoring run looked at (its manifest) when known, else every truth
    frame; ``frame_pattern`` (a regex searched in file names, e.g. ``Zone_(7|9)_``) narrows them further. A
    prediction of a class the truth does not know is an error, unless the truth has one class (then every
    prediction counts as that class).
    """
    gt = load_frame_truth(truth)
    pred = load_frame_predictions(predictions, gt)
    names = list(pred.scored_images) if pred.scored_images is not None else sorted(gt.images)
    if frame_pattern:
        names = [n for n in names if re.search(frame_pattern, n)]
        pred = FramePredictions({k: v for k, v in pred.images.items() if k in names}, pred.scored_images)
    if not names:
        raise InputError("no frames to evaluate", truth)
    unknown = sorted(set(names) - set(gt.images))
    if unknown:
        raise InputError(f"{len(unknown)} scored frame(s) have no truth, e.g. {unknown[0]}", truth)
    extra = sorted(set(pred.images) - set(names))
    if extra:
        raise InputError(f"predictions on {len(extra)} frame(s) not in the evaluated set, e.g. {extra[0]}", predictions)
    single = len(gt.class_names) == 1
    class_index = {n: i for i, n in enumerate(gt.class_names)}
    threshold = settings.score_threshold if settings.score_threshold is not None else -np.inf
    matches, per_class = [], {n: [] for n in gt.class_names}
    coco_dt = []
    for image_id, name in enumerate(names):
        _, _, t_boxes, t_labels = gt.images[name]
        p_boxes, p_scores, p_names = pred.images.get(name, (np.zeros((0, 4)), np.zeros(0), np.zeros(0, object)))
        if single:
            p_labels = np.zeros(len(p_scores), np.int64)
        else:
            bad = sorted(set(p_names) - set(class_index))
            if bad:
                raise InputError(f"predicted class {bad[0]!r} is not a truth class {list(gt.class_names)}", predictions)
            p_labels = np.array([class_index[n] for n in p_names], np.int64)
        for box, score, label in zip(p_boxes, p_scores, p_labels):
            coco_dt.append(
                {
                    "image_id": image_id,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                    "category_id": int(label),
                }
            )
        keep = p_scores >= threshold
        pc = (p_boxes[keep, :2] + p_boxes[keep, 2:]) / 2
        tc = (t_boxes[:, :2] + t_boxes[:, 2:]) / 2
        size = np.max(t_boxes[:, 2:] - t_boxes[:, :2], axis=1) if len(t_boxes) else np.zeros(0)
        tolerance = np.maximum(settings.floor_px, settings.size_factor * size)
        labels = {"pred_labels": p_labels[keep], "truth_labels": t_labels} if settings.class_aware else {}
        matches.append(match_points(pc, p_scores[keep], tc, tolerance, **labels))
        for c, class_name in enumerate(gt.class_names):
            pk, tk = p_labels[keep] == c, t_labels == c
            per_class[class_name].append(match_points(pc[pk], p_scores[keep][pk], tc[tk], tolerance[tk]))
    n = len(names)
    coco = coco_ap(gt, names, coco_dt)
    report = {
        "mode": "frames",
        "frames": n,
        "frames_with_items": int(sum(len(gt.images[k][2]) > 0 for k in names)),
        "coco": coco,
        "overall": summarise(matches, n_images=n, fa_per_image=settings.fa_per_image) | {"ap50": coco["ap50"]},
        "per_class": {
            c: summarise(m, n_images=n, fa_per_image=settings.fa_per_image) | {"ap50": coco["per_class_ap50"].get(c)}
            for c, m in per_class.items()
        },
        "rule": {
            "floor_px": settings.floor_px,
            "size_factor": settings.size_factor,
            "score_threshold": settings.score_threshold,
            "class_aware": settings.class_aware,
        },
    }
    report["pr_curve"] = [list(map(float, a)) for a in pr_curve(matches)]
    return report


def coco_ap(gt: FrameTruth, names: list[str], detections: list[dict]) -> dict:
    """COCO bbox AP over ``names`` (image ids are their positions), via faster-coco-eval."""
    from faster_coco_eval import COCO, COCOeval_faster

    images, annotations = [], []
    for image_id, name in enumerate(names):
        width, height, boxes, labels = gt.images[name]
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box, label in zip(boxes, labels):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "category_id": int(label),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(gt.class_names)]
    if not annotations:
        return {"ap50": None, "ap50_95": None, "per_class_ap50": {}}
    truth = COCO({"images": images, "annotations": annotations, "categories": categories})
    if not detections:
        return {"ap50": 0.0, "ap50_95": 0.0, "per_class_ap50": {n: 0.0 for n in gt.class_names}}
    results = truth.loadRes(detections)
    evaluator = COCOeval_faster(truth, results, iouType="bbox", print_function=log.debug)
    evaluator.params.maxDets = [1, 10, max(100, _max_per_image(detections))]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    per_class = {}
    for c, name in enumerate(gt.class_names):
        values = precision[0, :, c, 0, -1]
        per_class[name] = float(values[values > -1].mean()) if (values > -1).any() else None
    return {"ap50": float(evaluator.stats[1]), "ap50_95": float(evaluator.stats[0]), "per_class_ap50": per_class}


def _max_per_image(detections: list[dict]) -> int:
    counts: dict = {}
    for d in detections:
        counts[d["image_id"]] = counts.get(d["image_id"], 0) + 1
    return max(counts.values(), default=0)


def frames_markdown(report: dict) -> str:
    """A short markdown table for a frame evaluation."""
    keys = [
        "n_truth",
        "n_pred",
        "ap50",
        "ap",
        "recall",
        "precision",
        "false_alarms_per_image",
        "recall_at_0.1_fa_per_image",
        "recall_at_1_fa_per_image",
        "duplicate_rate",
    ]
    rows = [("all", report["overall"]), *list(report["per_class"].items())]
    lines = [
        f"{report['frames']} frames ({report['frames_with_items']} with items); COCO AP50-95 "
        f"{_fmt(report['coco']['ap50_95'])}. ap50: COCO box AP at IoU 0.5; ap, recall, precision: hazard points "
        f"(centre within {report['rule']['size_factor']:g} x item size, floor {report['rule']['floor_px']:g} px).",
        "",
        "| class | " + " | ".join(keys) + " |",
        "|" + " --- |" * (len(keys) + 1),
    ]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
