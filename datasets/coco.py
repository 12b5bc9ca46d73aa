"""COCO JSON annotations (CVAT, Label Studio, Roboflow exports): read, and write any dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ordnance.datasets.records import DatasetError, DetectionDataset, Record, read_image
from ordnance.inference.writers import write_json


def read_coco(
    annotations: str | Path, image_root: str | Path | None = None, *, class_names: list[str] | None = None
) -> DetectionDataset:
    """Read a COCO detection file. Categories are matched by name to ``class_names`` (default: the
    file's categories sorted by id). Images without annotations are negatives."""
    annotations = Path(annotations)
    if not annotations.is_file():
        raise DatasetError("COCO annotation file does not exist", annotations)
    try:
        coco = json.loads(annotations.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"not valid JSON ({error})", annotations) from None
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DatasetError(f"has no '{key}' list", annotations)
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    names = class_names or [categories[k] for k in sorted(categories)]
    root = Path(image_root) if image_root is not None else annotations.parent
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for image in coco["images"]:
        width, height = float(image["width"]), float(image["height"])
        boxes, labels = [], []
        for ann in by_image.get(image["id"], []):
            name = categories.get(ann["category_id"])
            if name is None or name not in names:
                raise DatasetError(
                    f"annotation {ann.get('id')} has unknown category {name or ann['category_id']!r}; "
                    f"configured classes are {list(names)}",
                    annotations,
                )
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0 or x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
                raise DatasetError(
                    f"annotation {ann.get('id')}: box {ann['bbox']} outside image "
                    f"{image['file_name']} ({width:g} x {height:g})",
                    annotations,
                )
            boxes.append([x / width, y / height, (x + w) / width, (y + h) / height])
            labels.append(names.index(name))
        path = root / image["file_name"]
        records.append(
            Record(
                path,
                np.clip(np.array(boxes, np.float64).reshape(-1, 4), 0, 1),
                np.array(labels, np.int64),
                group=Path(image["file_name"]).parent.name or "default",
            )
        )
    return DetectionDataset(records, names)


def write_coco(dataset: DetectionDataset, path: str | Path, *, image_root: str | Path | None = None) -> Path:
    """Write a dataset as COCO JSON (boxes in pixels), for checking labels in CVAT or FiftyOne.

    File names are relative to ``image_root`` (default: the JSON's folder) when possible. Chips of rasters
    are not image files; write them out first.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    images, annotations = [], []
    for image_id, record in enumerate(dataset.records, start=1):
        if record.window is not None:
            raise DatasetError("raster chips cannot be referenced from COCO; export them as images first", record.path)
        height, width = read_image(record.path).shape[:2]
        try:
            name = str(Path(record.path).resolve().relative_to(root.resolve()))
        except ValueError:
            name = str(Path(record.path).resolve())
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box, label in zip(np.asarray(record.boxes_norm, np.float64), record.labels):
            x0, y0, x1, y1 = box * [width, height, width, height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "hazard"} for i, n in enumerate(dataset.class_names)]
    write_json(path, {"images": images, "annotations": annotations, "categories": categories})
    return path
