"""YOLO / Roboflow exports: ``data.yaml`` with train/valid/test image folders and normalised labels."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import yaml
from ordnance.datasets.records import DatasetError, DetectionDataset, Record, find_duplicates, map_class_names
from ordnance.inference.annotations import read_yolo_labels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SPLIT_KEYS = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def _split_dir(data_yaml: Path, meta: dict, split: str) -> Path:
    key = SPLIT_KEYS.get(split)
    if key is None or key not in meta:
        raise DatasetError(f"has no '{key or split}' entry for split '{split}'", data_yaml)
    base = (data_yaml.parent / str(meta.get("path", "."))).resolve()
    entry = str(meta[key])
    for candidate in (base / entry, data_yaml.parent / entry, data_yaml.parent / entry.removeprefix("../")):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"image folder '{entry}' of split '{split}' does not exist", data_yaml)


def _parse_labels(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = read_yolo_labels(path, n_classes, DatasetError)
    return boxes.astype(np.float32), labels


def zone_group(path: Path, pattern: str = r"Zone_(\d+)") -> str:
    """The split group of a frame from its file name: ``zone_N`` for a number (thermal zones), the matched
    text itself otherwise (a flight name), or 'unzoned'."""
    match = re.search(pattern, Path(path).name)
    if not match:
        return "unzoned"
    return f"zone_{match.group(1)}" if match.group(1).isdigit() else match.group(1)


def read_yolo(
    data_yaml: str | Path,
    splits: str | list[str] = "train",
    *,
    class_names: list[str] | None = None,
    class_map: dict[str, str] | None = None,
    group_pattern: str = r"Zone_(\d+)",
) -> DetectionDataset:
    """Read one or more splits of a YOLO export.

    Args:
        data_yaml: The export's ``data.yaml``.
        splits: "train", "valid" and/or "test"; several are pooled (to re-split by site or zone).
        class_names: Configured classes, matched by name; default: the names in data.yaml.
        class_map: data.yaml name -> configured name where they differ (``{"pfm-1": "ap_mine"}``).
        group_pattern: Regex whose first group names a frame's site or zone (for splits).

    Images without a label file are negatives. Exact duplicate images are reported in the log and in the
    returned dataset's ``duplicates``.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DatasetError("data.yaml does not exist", data_yaml)
    try:
        meta = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as error:
        raise DatasetError(f"not valid YAML ({str(error).splitlines()[0]})", data_yaml) from None
    names = meta.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DatasetError("has no class 'names'", data_yaml)
    index = np.array(map_class_names(names, class_names, data_yaml, class_map), np.int64)
    records = []
    for split in [splits] if isinstance(splits, str) else splits:
        image_dir = _split_dir(data_yaml, meta, split)
        label_dir = image_dir.parent / "labels"
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for image in images:
            label = label_dir / f"{image.stem}.txt"
            boxes, labels = (
                _parse_labels(label, len(names))
                if label.exists()
                else (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            )
            records.append(Record(image, boxes, index[labels], zone_group(image, group_pattern)))
    dataset = DetectionDataset(records, class_names or names)
    dataset.duplicates = find_duplicates([r.path for r in records])
    for group in dataset.duplicates:
        log.warning("identical images: %s", ", ".join(str(p) for p in group))
    return dataset
