"""One sample type for every source: an image, its boxes (xyxy pixels), labels and where it came from."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ordnance.inference.errors import InputError
from ordnance.inference.session import file_sha256

log = logging.getLogger(__name__)


IGNORE = -1
"""Label of an ignore region (see :class:`Record`)."""


class DatasetError(InputError):
    """An annotation or image file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Sample:
    """One training image.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) float32 xyxy in pixels of ``image``.
        labels: (N,) int64 class ids into the dataset's class list.
        source: The file (and window) it came from.
        points: Optional (M, 2) float32 point-only annotations (pixels), with ``point_labels``.
        point_labels: (M,) int64.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    source: str
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None


@dataclass(frozen=True)
class Record:
    """A sample before its pixels are read.

    Attributes:
        path: Image file, or raster for a chip.
        boxes_norm: (N, 4) xyxy normalised to the image (or window) size, in [0, 1].
        labels: (N,) int64.
        group: Split group: a site, zone, source file or spatial block. Never split one group.
        window: (col_off, row_off, width, height) of a raster chip, else None.
        core: The chip's kept region (x0, y0, x1, y1) in raster pixels on the scorer's grid, else None.
        gsd_m: Metres per pixel of this record's image when it differs from the dataset's ``source_gsd_m``
            (a reviewed survey's own mosaic), else None.

    A label of ``IGNORE`` (-1) marks an ignore region: something nobody decided on (an unreviewed candidate),
    trained neither as an item nor as background.
    """

    path: Path
    boxes_norm: np.ndarray
    labels: np.ndarray
    group: str
    window: tuple[int, int, int, int] | None = None
    core: tuple[float, float, float, float] | None = None
    gsd_m: float | None = None

    @property
    def source(self) -> str:
        return f"{self.path}" + (f"@{self.window}" if self.window else "")


def read_image(path: Path) -> np.ndarray:
    """Read a JPEG/PNG/TIFF as (H, W, 3) uint8 RGB; DatasetError naming the file when unreadable."""
    if not Path(path).is_file():
        raise DatasetError("image file does not exist", path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError("image cannot be decoded (corrupt or not an image)", path)
    return np.ascontiguousarray(image[..., ::-1])


def load_record(record: Record, *, band_order: tuple[int, ...] = (1, 2, 3)) -> Sample:
    """Read a record's pixels and turn its boxes into pixels."""
    if record.window is None:
        image = read_image(record.path)
    else:
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(record.path) as src:
            data = src.read(list(band_order), window=Window(*record.window), boundless=True, fill_value=0)
        image = np.ascontiguousarray(data.transpose(1, 2, 0))
    h, w = image.shape[:2]
    boxes = (record.boxes_norm * np.array([w, h, w, h], np.float32)).astype(np.float32).reshape(-1, 4)
    return Sample(image=image, boxes=boxes, labels=record.labels.astype(np.int64), source=record.source)


class DetectionDataset(Sequence):
    """Records plus their class names; indexing loads a :class:`Sample`."""

    def __init__(self, records: list[Record], class_names: Sequence[str]) -> None:
        self.records = list(records)
        self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        return load_record(self.records[index])

    def box_count(self) -> int:
        """Boxes of items (ignore regions not counted)."""
        return int(sum((r.labels >= 0).sum() for r in self.records))

    def subset(self, keep) -> DetectionDataset:
        return DetectionDataset([r for r in self.records if keep(r)], self.class_names)


def image_keys(records: Sequence[Record]) -> dict[str, bool]:
    """A short content key of each record's image -> whether any record with that key holds an annotated item.

    Whole images are keyed by the sha256 of their bytes, so the same tile under another name or folder has the
    same key; windows of a large raster by the raster's file name and the window (a mosaic is not hashed whole).
    What a model trained on is kept as these keys in its checkpoint (``ordnance_training_images``), so a split it
    is later validated or tested on can be checked for images it has seen.
    """
    keys: dict[str, bool] = {}
    for record in records:
        if record.window is None:
            digest = file_sha256(record.path)
        else:
            digest = hashlib.sha256(f"{Path(record.path).name}@{tuple(record.window)}".encode()).hexdigest()
        key = digest[:16]
        keys[key] = keys.get(key, False) or bool((np.asarray(record.labels) >= 0).any())
    return keys


def find_duplicates(paths: list[Path]) -> list[list[Path]]:
    """Groups of files with identical bytes (sha256), each group sorted."""
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_hash[file_sha256(path)].append(Path(path))
    return [sorted(group) for group in by_hash.values() if len(group) > 1]


def map_class_names(
    source_names: Sequence[str],
    class_names: Sequence[str] | None,
    where: object,
    class_map: dict[str, str] | None = None,
) -> list[int]:
    """Index of each source class in the configured class list, matched by name.

    Args:
        source_names: The dataset's own class names, in its label order.
        class_names: Configured classes; None keeps the source classes as they are.
        where: The file named in errors.
        class_map: Source name -> configured name, for datasets whose names differ from ours
            (``{"pfm-1": "ap_mine"}``); names not in the map are matched as they are.
    """
    class_map = dict(class_map or {})
    stray = sorted(set(class_map) - set(source_names))
    if stray:
        raise DatasetError(f"class_map names {stray} that are not categories of the data ({list(source_names)})", where)
    if class_names is None:
        if class_map:
            raise DatasetError("class_map needs the configured class_names to map onto", where)
        return list(range(len(source_names)))
    mapped = [class_map.get(n, n) for n in source_names]
    unknown = [s for s, n in zip(source_names, mapped) if n not in class_names]
    if unknown:
        raise DatasetError(f"unknown categories {unknown}; configured classes are {list(class_names)}", where)
    return [list(class_names).index(n) for n in mapped]
