"""COCO JSON annotations (CVAT, Label Studio, Roboflow exports): read, and write any dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ordnance.datasets.records import DatasetError, DetectionDataset, Record, read_image
from ordnance.inference.annotations import read_coco_file
from ordnance.inference.writers import write_json


def read_coco(
    annotations: str | Path, image_root: str | Path | None = None, *, class_names: list[str] | None = None
) -> DetectionDataset:
    """Read a COCO detection file. Categories are matched by name to ``class_names`` (default: the
    file's categories sorted by id). Images without annotations are negatives."""
    annotations = Path(annotations)
    coco = read_coco_file(annotations, DatasetError)
    names = list(class_names or coco.categories.values())
    root = Path(image_root) if image_root is not None else annotations.parent
    records = []
    for image in coco.images:
        unknown = sorted({coco.categories[int(c)] for c in image.category_ids} - set(names))
        if unknown:
            raise DatasetError(f"image {image.file_name}: unknown category {unknown[0]!r}; configured classes are "
                               f"{names}", annotations)  # fmt: skip
        labels = np.array([names.index(coco.categories[int(c)]) for c in image.category_ids], np.int64)
        scale = [image.width, image.height, image.width, image.height]
        group = Path(image.file_name).parent.name or "default"
        records.append(Record(root / image.file_name, image.boxes_px / scale, labels, group=group))
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
