"""The one reader of YOLO label files and COCO annotation files, for the training data readers and for frame
evaluation (``ordnance evaluate`` on frames), so that both see the same boxes.

YOLO rows are ``class cx cy w h`` or a polygon ``class x1 y1 x2 y2 x3 y3 ...`` (Roboflow segment exports), both
normalised; a polygon becomes its bounding box. COCO boxes are ``[x, y, w, h]`` in pixels. A box may reach half
a pixel (YOLO: 1e-3 of the side) past the image, as rounding in annotation tools does, and is clipped to it;
beyond that, or with no area, the file is refused naming the line or annotation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ordnance.inference.errors import InputError

YOLO_SLACK = 1e-3  # normalised units
COCO_SLACK_PX = 0.5


def read_yolo_labels(path: str | Path, n_classes: int | None = None, error=InputError) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) x0 y0 x1 y1 normalised to [0, 1], class ids (N,)) of one YOLO label file."""
    path = Path(path)
    boxes, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls_value, values = float(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise error(f"line {number}: not numbers: {line.strip()[:60]!r}", path) from None
        if cls_value != int(cls_value) or cls_value < 0:
            raise error(f"line {number}: class {parts[0]!r} is not a class index", path)
        cls = int(cls_value)
        if len(values) == 4:
            cx, cy, w, h = values
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon: its bounds
            xs, ys = values[0::2], values[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise error(
                f"line {number}: {len(parts)} values; expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 "
                "x3 y3 ...'",
                path,
            )
        if n_classes is not None and cls >= n_classes:
            raise error(f"line {number}: class {cls} is not among the {n_classes} class names", path)
        if not (x1 > x0 and y1 > y0) or min(x0, y0) < -YOLO_SLACK or max(x1, y1) > 1 + YOLO_SLACK:
            raise error(f"line {number}: box outside the image or without area ({line.strip()[:60]})", path)
        boxes.append(np.clip([x0, y0, x1, y1], 0.0, 1.0))
        labels.append(cls)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    boxes_px: np.ndarray  # (N, 4) x0 y0 x1 y1, clipped to the image
    category_ids: np.ndarray  # (N,)


@dataclass(frozen=True)
class CocoFile:
    categories: dict[int, str]  # id -> name, in id order
    images: list[CocoImage]


def read_coco_file(path: str | Path, error=InputError) -> CocoFile:
    """A COCO detection file: its categories and each image's boxes, checked against the image's size."""
    path = Path(path)
    if not path.is_file():
        raise error("COCO annotation file does not exist", path)
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"not valid JSON ({err.msg} at line {err.lineno})", path) from None
    except UnicodeDecodeError:
        raise error("not UTF-8 text", path) from None
    if not isinstance(spec, dict) or not {"images", "annotations", "categories"} <= set(spec):
        raise error("not a COCO annotation file (needs images, annotations and categories lists)", path)
    try:
        categories = {int(c["id"]): str(c["name"]) for c in sorted(spec["categories"], key=lambda c: c["id"])}
        sizes = {int(i["id"]): (str(i["file_name"]), int(i["width"]), int(i["height"])) for i in spec["images"]}
    except (KeyError, TypeError, ValueError):
        raise error("a category lacks id or name, or an image lacks id, file_name, width or height", path) from None
    by_image: dict[int, list[tuple[list[float], int]]] = {i: [] for i in sizes}
    for ann in spec["annotations"]:
        where = f"annotation {ann.get('id')!r}" if isinstance(ann, dict) else "an annotation"
        try:
            image_id, category, bbox = int(ann["image_id"]), int(ann["category_id"]), [float(v) for v in ann["bbox"]]
        except (KeyError, TypeError, ValueError):
            raise error(f"{where} lacks a numeric image_id, category_id or bbox", path) from None
        if category not in categories:
            raise error(f"{where} has unknown category {category}", path)
        if image_id not in sizes:
            raise error(f"{where} refers to image {image_id}, which is not in 'images'", path)
        name, width, height = sizes[image_id]
        if len(bbox) != 4:
            raise error(f"{where}: bbox needs 4 numbers [x, y, w, h], got {len(bbox)}", path)
        x, y, w, h = bbox
        if (
            not (w > 0 and h > 0)
            or min(x, y) < -COCO_SLACK_PX
            or x + w > width + COCO_SLACK_PX
            or (y + h > height + COCO_SLACK_PX)
        ):
            raise error(f"{where}: box {bbox} outside image {name} ({width} x {height}) or without area", path)
        by_image[image_id].append(([x, y, x + w, y + h], category))
    images = []
    for image_id, (name, width, height) in sizes.items():
        rows = by_image[image_id]
        boxes = np.array([r[0] for r in rows], np.float64).reshape(-1, 4)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        images.append(CocoImage(image_id, name, width, height, boxes, np.array([r[1] for r in rows], np.int64)))
    return CocoFile(categories, images)
