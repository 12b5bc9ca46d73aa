"""Split helpers that keep neighbours together: by group (site, zone, file) or by spatial block."""

from __future__ import annotations

import numpy as np
from ordnance.datasets.records import DatasetError, DetectionDataset


def split_by_groups(dataset: DetectionDataset, val_groups: list[str]) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, val): records whose group is in ``val_groups`` (a zone "7" matches "zone_7") go to val."""
    wanted = {g if "_" in g or ":" in g else f"zone_{g}" for g in map(str, val_groups)}
    present = {r.group for r in dataset.records}
    missing = sorted(wanted - present)
    if missing:
        raise DatasetError(f"validation groups {missing} are not in the data (groups: {sorted(present)})")
    val = dataset.subset(lambda r: r.group in wanted)
    train = dataset.subset(lambda r: r.group not in wanted)
    return train, val


def split_by_file(dataset: DetectionDataset, val_fraction: float, seed: int = 0):
    """(train, val) by source file: all chips of one mosaic or frame stay on one side."""
    files = sorted({str(r.path) for r in dataset.records})
    rng = np.random.default_rng(seed)
    val_files = set(rng.choice(files, max(1, round(val_fraction * len(files))), replace=False))
    return dataset.subset(lambda r: str(r.path) not in val_files), dataset.subset(lambda r: str(r.path) in val_files)


def split_by_block(dataset: DetectionDataset, val_fraction: float, seed: int = 0):
    """(train, val) by spatial block (the ``group`` of GeoTIFF chips): whole blocks go to one side."""
    groups = sorted({r.group for r in dataset.records})
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, max(1, round(val_fraction * len(groups))), replace=False))
    return dataset.subset(lambda r: r.group not in val_groups), dataset.subset(lambda r: r.group in val_groups)
