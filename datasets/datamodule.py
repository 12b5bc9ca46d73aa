"""A LightningDataModule over any reader, split by group (site, zone, file or spatial block), never by
random tiles of one survey."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from ordnance.datasets.augment import AugmentConfig, build_eval_transform, build_train_transform
from ordnance.datasets.composite import CopyPaste, Patch, composite, cut_patches, stitch
from ordnance.datasets.gsd import load_at_gsd
from ordnance.datasets.records import DatasetError, DetectionDataset, image_keys
from ordnance.datasets.reviewed import REVIEW_GROUP, ReviewedRun, read_reviewed_runs
from ordnance.datasets.splits import split_by_groups
from ordnance.datasets.synth.items import CATALOG
from ordnance.datasets.yolo import read_yolo
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)
CATALOG_LABELS = {name: item.label for name, item in CATALOG.items()}


@dataclass
class SyntheticData:
    """Generate a synthetic YOLO dataset in ``data_yaml``'s folder when it is missing (seeded, resumable)."""

    n_train: int = 2000
    n_valid: int = 200
    tile_px: int = 512
    gsd_m: float = 0.01
    seed: int = 0
    empty_ratio: float = 0.1
    train_lookalike_scale: float = 1.0
    """Look-alike density of training scenes relative to the generator's (validation scenes keep 1): more
    stones, cans and bottles per crop are more hard negatives per training step."""


class _Transformed(Dataset):
    """Records loaded at the working GSD, optionally with pasted items, then transformed."""

    def __init__(
        self,
        data: DetectionDataset,
        transform,
        *,
        gsd: tuple[float | None, float | None] = (None, None),
        paste: tuple[CopyPaste, list[Patch], dict[str, int]] | None = None,
        seams: tuple[float, list[int]] | None = None,
    ) -> None:
        self.data, self.transform, self.gsd, self.paste = data, transform, gsd, paste
        self.seams = seams  # (probability, indices of the images without items that lend quadrants)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        sample = load_at_gsd(self.data.records[index], *self.gsd)
        # One seed per draw from the process's torch generator: seeded by seed_everything in the main process and
        # per worker by the DataLoader, advanced by every draw, so pasting and augmentation differ from epoch to
        # epoch (persistent workers included) and a run repeats exactly. Albumentations would otherwise seed
        # itself from the OS.
        seed = int(torch.randint(0, 2**32 - 1, (1,), dtype=torch.int64))
        rng = np.random.default_rng(seed)
        if self.seams is not None and rng.random() < self.seams[0]:
            others = [i for i in self.seams[1] if i != index]
            picks = rng.choice(len(others), min(3, len(others)), replace=False) if others else []
            donors = [load_at_gsd(self.data.records[others[int(i)]], *self.gsd).image for i in picks]
            sample = stitch(sample, donors, rng)
        if self.paste is not None:
            cfg, patches, class_ids = self.paste
            sample = composite(sample, patches, cfg, class_ids, self.gsd[1], rng)
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)
        out = self.transform(image=sample.image, bboxes=sample.boxes, labels=sample.labels)
        image = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1)
        boxes = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"], np.int64).reshape(-1))
        return image, boxes, labels, sample.source


def set_opencv_threads(threads: int, _worker_id: int) -> None:
    """DataLoader worker start: OpenCV's thread count in this worker."""
    cv2.setNumThreads(threads)


def collate(batch):
    """uint8 images stacked (N, 3, S, S); boxes and labels as lists; sources."""
    images, boxes, labels, sources = zip(*batch)
    return torch.stack(images), list(boxes), list(labels), list(sources)


@dataclass
class GeoTiffSource:
    """A mosaic plus vector labels, cut into chips on the scorer's grid and split by spatial block."""

    raster: str
    vector: str
    size_m: dict[str, float]
    chip_px: int = 512
    overlap_px: int = 96
    min_ioa: float = 0.5
    negative_ratio: float = 0.2
    class_field: str = "class"
    val_fraction: float = 0.2
    block_px: int | None = None
    seed: int = 0


class DetectionDataModule(L.LightningDataModule):
    """Training and validation data from any reader: a YOLO/Roboflow export (``data_yaml``), COCO files
    (``coco_train``/``coco_val``) or a GeoTIFF mosaic with vector labels (``geotiff``).

    Args:
        data_yaml: The export's data.yaml (YOLO). Ignored when ``coco_train`` or ``geotiff`` is given.
        coco_train, coco_val: COCO JSON files (images relative to each file, or ``coco_image_root``).
        coco_image_root: Folder of COCO image paths.
        geotiff: A mosaic with vector labels, split into train and validation by spatial block.
        class_names: Configured classes (matched by name); default: data.yaml's names.
        splits: Folders read. With ``val_groups``, they are pooled and re-split by group.
        val_groups: Groups (zones, sites, blocks) held out for validation; None uses the export's own
            ``valid`` folder.
        group_pattern: Regex whose first group names a file's zone or site.
        class_map: Source class name -> configured class name (``{"pfm-1": "ap_mine"}``), so that one model
            keeps the project's classes across datasets.
        source_gsd_m: Metres per pixel of the dataset's images, when they carry none (measured, e.g. with
            :func:`ordnance.datasets.gsd.estimate_gsd`). With ``gsd_m`` every image is resampled to it.
        gsd_m: The working GSD the network is trained at (the model card's ``gsd_m``).
        test_split: Folder read by ``ordnance train test`` (YOLO exports).
        copy_paste: Paste real or drawn items onto training images (:class:`CopyPaste`).
        crop_px: Training crop side (a multiple of 32).
        tile_size_px: Validation tiles are padded to this side, as the scorer pads.
        batch_size, num_workers: Loader settings.
        augment: Training augmentation.
        synthetic: Generate the dataset first when data.yaml is missing.
        reviewed: Scored and reviewed survey runs (:class:`ReviewedRun`): confirmed candidates are items,
            rejected ones hard negatives, undecided ones ignore regions. Their chips (the training crop's size
            unless a run sets ``chip_px``) join the training data, and their held-out blocks the validation data.
        replay: Share of the training images drawn from the sources above when ``reviewed`` is given, so
            a fine-tune on one survey does not forget the rest (0: reviewed chips only).
        group_weights: Share of each epoch per split group (flight, site, zone), relative: ``{"F03": 3}`` draws
            three times as many images from group F03 as from a group of weight 1 (the default), whatever the
            groups' sizes. Keys are matched as regular expressions against the group names; None draws every
            image once per epoch.
        opencv_threads: OpenCV threads in each loader worker; None keeps OpenCV's default (one per core). One
            thread per worker was slower on a 16-core machine and no faster on 2 cores
            (experiments/pfm1/loader_speed.py), so the default stays.
        seams: Probability that a training image has one to three of its quadrants replaced by the same ground of
            other training images without items (:func:`ordnance.datasets.composite.stitch`): seams like those
            where separately photographed pieces of ground meet on a mosaic. 0 (the default) never.
    """

    def __init__(
        self,
        data_yaml: str | None = None,
        *,
        coco_train: str | None = None,
        coco_val: str | None = None,
        coco_image_root: str | None = None,
        geotiff: GeoTiffSource | None = None,
        class_names: list[str] | None = None,
        splits: tuple[str, ...] = ("train", "valid"),
        val_groups: list[str] | None = None,
        group_pattern: str = r"Zone_(\d+)",
        class_map: dict[str, str] | None = None,
        source_gsd_m: float | None = None,
        gsd_m: float | None = None,
        test_split: str = "test",
        copy_paste: CopyPaste | None = None,
        crop_px: int = 512,
        tile_size_px: int = 512,
        batch_size: int = 4,
        num_workers: int = 2,
        augment: AugmentConfig | None = None,
        synthetic: SyntheticData | None = None,
        reviewed: list[ReviewedRun] | None = None,
        replay: float = 0.5,
        group_weights: dict[str, float] | None = None,
        opencv_threads: int | None = None,
        seams: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= seams <= 1:
            raise ValueError(f"seams is a probability in [0, 1], got {seams}")
        self.seams = seams
        self.opencv_threads = opencv_threads
        self.data_yaml = Path(data_yaml) if data_yaml else None
        self.coco = (coco_train, coco_val, coco_image_root)
        self.geotiff = geotiff
        self.class_names = class_names
        self.splits = list(splits)
        self.val_groups = val_groups
        self.group_pattern = group_pattern
        self.class_map = class_map
        if (source_gsd_m is None) != (gsd_m is None):
            raise ValueError("source_gsd_m and gsd_m go together: the data's GSD and the working GSD")
        self.gsd = (source_gsd_m, gsd_m)
        self.test_split = test_split
        self.copy_paste = copy_paste
        self.test_data: DetectionDataset | None = None
        self.crop_px, self.tile_size_px = crop_px, tile_size_px
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augment = augment or AugmentConfig()
        self.synthetic = synthetic
        self.train_data: DetectionDataset | None = None
        self.val_data: DetectionDataset | None = None
        if not 0 <= replay < 1:
            raise ValueError(f"replay is a share of the training images in [0, 1), got {replay}")
        self.reviewed, self.replay = list(reviewed or []), replay
        bad = {k: v for k, v in (group_weights or {}).items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"group_weights must be finite and >= 0, got {bad}")
        self.group_weights = dict(group_weights or {})
        self.review_summaries: list[dict] = []
        self._image_keys: dict[str, dict[str, bool]] = {}

    def lineage(self) -> dict:
        """What a fine-tune on reviewed runs learnt from: the runs, the models that scored them and the
        decisions (empty without reviewed runs). The checkpoint keeps it and the export writes it into the card."""
        if not self.review_summaries:
            return {}
        runs = self.review_summaries
        return {
            "runs": [{k: r[k] for k in ("run", "folder", "scored_by_sha256", "decisions", "chips")} for r in runs],
            "scored_by_sha256": sorted({r["scored_by_sha256"] for r in runs}),
            "decisions": {s: sum(r["decisions"][s] for r in runs) for s in ("confirmed", "rejected")},
            "replay": self.replay,
        }

    def image_keys(self, split: str) -> dict[str, bool]:
        """Content keys of the images of ``split`` ("train", "val" or "test": the test split where it was read,
        else the validation data, as ``test_dataloader`` does) -> whether each holds an annotated item; computed
        once per split (``datasets.records.image_keys``)."""
        if split not in self._image_keys:
            test = self.test_data if self.test_data is not None else self.val_data
            data = {"train": self.train_data, "val": self.val_data, "test": test}[split]
            self._image_keys[split] = image_keys(data.records) if data is not None else {}
        return self._image_keys[split]

    def prepare_data(self) -> None:
        if self.synthetic is not None and self.data_yaml is not None and not self.data_yaml.exists():
            from ordnance.datasets.synth.writers import write_tile_dataset

            s = self.synthetic
            log.info("generating synthetic tiles in %s", self.data_yaml.parent)
            write_tile_dataset(
                self.data_yaml.parent,
                n_train=s.n_train,
                n_valid=s.n_valid,
                tile_px=s.tile_px,
                gsd_m=s.gsd_m,
                seed=s.seed,
                empty_ratio=s.empty_ratio,
                train_lookalike_scale=s.train_lookalike_scale,
            )

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        if self.geotiff is not None:
            from ordnance.datasets.geochips import read_geotiff_chips
            from ordnance.datasets.splits import split_by_block

            g = self.geotiff
            chips = read_geotiff_chips(
                g.raster,
                g.vector,
                class_names=self.class_names,
                size_m=g.size_m,
                tile_px=g.chip_px,
                overlap_px=g.overlap_px,
                min_ioa=g.min_ioa,
                negative_ratio=g.negative_ratio,
                class_field=g.class_field,
                seed=g.seed,
                block_px=g.block_px,
            )
            self.train_data, self.val_data = split_by_block(chips, g.val_fraction, g.seed)
        elif self.coco[0]:
            from ordnance.datasets.coco import read_coco

            train, val, root = self.coco
            self.train_data = read_coco(train, root, class_names=self.class_names)
            self.val_data = read_coco(val, root, class_names=self.class_names)
        elif self.data_yaml is None and self.reviewed:
            if not self.class_names:
                raise ValueError("reviewed runs alone need data.class_names")
            self.train_data = self.val_data = DetectionDataset([], self.class_names)
        elif self.data_yaml is None:
            raise ValueError("DetectionDataModule needs data_yaml, coco_train/coco_val, geotiff or reviewed")
        elif self.val_groups:
            pooled = self._read_yolo(self.splits)
            self.train_data, self.val_data = split_by_groups(pooled, self.val_groups)
        else:
            self.train_data = self._read_yolo("train")
            self.val_data = self._read_yolo("valid")
        if self.reviewed:
            self._add_reviewed()
        log.info(
            "train: %d images, %d boxes; val: %d images, %d boxes",
            len(self.train_data),
            self.train_data.box_count(),
            len(self.val_data),
            self.val_data.box_count(),
        )

    def _add_reviewed(self) -> None:
        """Reviewed chips plus a replay share of the original training images; reviewed validation blocks join
        the validation data."""
        names = list(self.train_data.class_names)
        specs = [replace(r, chip_px=r.chip_px or self.crop_px) for r in self.reviewed]
        train, val, self.review_summaries = read_reviewed_runs(specs, names)
        if any(r.gsd_m for r in train.records + val.records) and not self.gsd[1]:
            raise DatasetError("a reviewed mosaic is not at the model's GSD; set data.source_gsd_m and data.gsd_m")
        if not len(train):
            raise DatasetError("the reviewed runs gave no training chip (every decided block went to validation)")
        # Every original image stays in the pool; the loader's sampler draws the replay share from all of them, so
        # a fine-tune on a few dozen chips neither forgets nor sees one fixed handful of its old images
        mixed = train.records if self.replay == 0 else train.records + self.train_data.records
        self.train_data = DetectionDataset(mixed, names)
        self.val_data = DetectionDataset(self.val_data.records + val.records, names)
        for s in self.review_summaries:
            log.info("reviewed run %s: %s decisions, chips %s", s["run"], s["decisions"], s["chips"])

    def _read_yolo(self, splits):
        return read_yolo(
            self.data_yaml,
            splits,
            class_names=self.class_names,
            class_map=self.class_map,
            group_pattern=self.group_pattern,
        )

    def _paste(self):
        """Training images and the pasting setup: patches cut from the training split only."""
        cfg, data = self.copy_paste, self.train_data
        if cfg is None:
            return data, None
        names = list(data.class_names)
        class_ids = {n: names.index(n) for n in names}
        unknown = sorted({*cfg.synthetic_names, *cfg.lookalike_names} - set(CATALOG_LABELS))
        if unknown:
            raise DatasetError(f"copy_paste names items {unknown} that the catalogue does not draw")
        if cfg.synthetic_items and any(CATALOG_LABELS[n] is None for n in cfg.synthetic_names):
            raise DatasetError("copy_paste synthetic_names must be labelled items; look-alikes go in lookalike_names")
        wanted = {CATALOG_LABELS[n] for n in cfg.synthetic_names} if cfg.synthetic_items else set()
        missing = sorted(wanted - set(names))
        if missing:
            raise DatasetError(f"copy_paste draws items of classes {missing} that are not configured ({names})")
        if cfg.lookalike_items and any(CATALOG_LABELS[n] is not None for n in cfg.lookalike_names):
            raise DatasetError("copy_paste lookalike_names must be unlabelled look-alikes, not items")
        if (cfg.synthetic_items or cfg.lookalike_items) and not self.gsd[1]:
            raise DatasetError("copy_paste draws items at their physical size and needs data.gsd_m")
        patches = []
        if cfg.real_items:
            positives = [r for r in data.records if (r.labels >= 0).any()]
            patches = cut_patches((load_at_gsd(r, *self.gsd) for r in positives), cfg.margin)
            log.info("copy-paste: %d real items from %d training images", len(patches), len(positives))
        if cfg.backgrounds_only:
            data = data.subset(lambda r: len(r.labels) == 0)
            log.info("copy-paste: %d empty training images as backgrounds", len(data))
        return data, (cfg, patches, class_ids)

    def _worker_init(self):
        return None if self.opencv_threads is None else partial(set_opencv_threads, int(self.opencv_threads))

    def train_dataloader(self) -> DataLoader:
        records, paste = self._paste()
        transform = build_train_transform(self.augment, self.crop_px)
        seams = None
        if self.seams:
            empty = [i for i, r in enumerate(records.records) if len(r.labels) == 0]
            if len(empty) < 2:
                raise DatasetError(
                    "seams needs at least two training images without items to lend their ground;"
                    f" there are {len(empty)}"
                )
            seams = (self.seams, empty)
        data = _Transformed(records, transform, gsd=self.gsd, paste=paste, seams=seams)
        sampler = self._train_sampler(records)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=self._worker_init(),
        )

    def _group_share(self, records: list) -> np.ndarray:
        """Each record's share of an epoch (sum 1) under ``group_weights``: a group's weight split evenly over
        its images."""
        groups = np.array([str(r.group) for r in records], dtype=object)
        weight = np.ones(len(records))
        for pattern, value in self.group_weights.items():
            hit = np.array([re.search(pattern, g) is not None for g in groups], bool)
            if not hit.any():
                raise DatasetError(f"group_weights: {pattern!r} matches no training group ({sorted(set(groups))[:6]})")
            weight[hit] = value
        share = np.zeros(len(records))
        for group in np.unique(groups):
            members = groups == group
            share[members] = weight[members] / members.sum()
        if share.sum() <= 0:
            raise DatasetError("group_weights leave no training image with a weight above 0")
        return share / share.sum()

    def _train_sampler(self, records: DetectionDataset):
        """With reviewed runs: draw ``1 - replay`` of each epoch from the reviewed chips and ``replay`` from all
        the original training images, with replacement; with ``group_weights``, the original images by their
        group's share (None when every image is simply drawn once per epoch)."""
        from torch.utils.data import WeightedRandomSampler

        reviewed = np.array([str(r.group).startswith(REVIEW_GROUP) for r in records.records], bool)
        has_review = bool(self.reviewed) and self.replay > 0 and reviewed.any() and not reviewed.all()
        if not has_review and not self.group_weights:
            return None
        originals = [r for r, rev in zip(records.records, reviewed) if not rev]
        base = self._group_share(originals) if self.group_weights else np.full(len(originals), 1 / len(originals))
        weights = np.zeros(len(records))
        if has_review:
            weights[reviewed] = (1 - self.replay) / reviewed.sum()
            weights[~reviewed] = self.replay * base
        else:
            weights[~reviewed] = base
        return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(records), replacement=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_data)

    def _eval_loader(self, records: DetectionDataset) -> DataLoader:
        data = _Transformed(records, build_eval_transform(self.tile_size_px), gsd=self.gsd)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=self._worker_init(),
        )

    def test_dataloader(self) -> DataLoader:
        """The export's ``test_split`` folder where there is one (YOLO), else the validation data."""
        if self.test_data is None and self.data_yaml is not None and not self.coco[0] and not self.geotiff:
            try:
                self.test_data = self._read_yolo(self.test_split)
            except DatasetError:
                log.warning("no '%s' split in %s: testing on the validation data", self.test_split, self.data_yaml)
        return self._eval_loader(self.test_data if self.test_data is not None else self.val_data)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
