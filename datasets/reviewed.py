"""A scored and reviewed survey as training data: analysts' decisions become boxes and hard negatives.

An ``ordnance score`` output folder holds the mosaic's path and sha256 (manifest.json) and the candidates
with their ``review_status`` (candidates.gpkg, written by ``ordnance review import``). Read here:

- confirmed candidates become boxes of their class;
- rejected candidates become hard negatives: chips that hold the rejected object and no box there;
- unreviewed and unsure candidates are left out: no chip is kept for them, and where one lies inside a kept
  chip it is an ignore region (label ``IGNORE``), trained neither as an item nor as background, so a mine
  nobody looked at is never taught as grass.

Chips sit on the scorer's grid (its origin and the run's overlap, in the mosaic's pixels at the model's GSD;
the scorer's tile size, or the training crop's), grouped in square blocks for the usual spatial split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ordnance.datasets.records import IGNORE, DatasetError, DetectionDataset, Record
from ordnance.datasets.splits import split_by_block
from ordnance.inference.grid import box_ioa, tile_grid

DECIDED = ("confirmed", "rejected")
REVIEW_GROUP = "review:"  # the split group of every reviewed chip starts so: "review:<mosaic>:block_<col>_<row>"


@dataclass
class ReviewedRun:
    """One reviewed scoring run used as training data.

    Attributes:
        run: The ``ordnance score`` output folder (manifest.json and candidates.gpkg with decisions).
        chip_px: Chip side in model pixels; default the model's tile (the data module passes its training
            crop instead, so that every training crop holds the decisions of its chip).
        overlap_px: Overlap of neighbouring chips in model pixels; default the run's overlap.
        min_ioa: A candidate belongs to a chip when this share of its box lies inside.
        val_fraction: Share of spatial blocks held out for validation.
        block_px: Block side for the split, in model pixels (default 8 chips).
        seed: Seed of the split.
    """

    run: str
    chip_px: int | None = None
    overlap_px: int | None = None
    min_ioa: float = 0.5
    val_fraction: float = 0.2
    block_px: int | None = None
    seed: int = 0


def _boxes(table: dict, rows: np.ndarray) -> np.ndarray:
    return np.array([[float(v) for v in str(table["bbox_px"][i]).split(",")] for i in rows], np.float64).reshape(-1, 4)


def read_reviewed_run(
    spec: ReviewedRun, class_names: list[str] | tuple[str, ...]
) -> tuple[DetectionDataset, DetectionDataset, dict]:
    """(train, val, summary) chips of one reviewed run.

    The summary says what was used: the run id, the model that scored it (sha256), the decisions by status,
    the chips on each side, and the validation chips left out because they held an undecided candidate.
    """
    # The scoring outputs' readers bring GDAL (pyogrio, rasterio) and ONNX Runtime: imported here, so that
    # training on tiles alone needs none of them.
    from ordnance.inference.review import read_candidates, run_id
    from ordnance.inference.session import file_sha256
    from ordnance.inference.writers import read_manifest

    folder = Path(spec.run)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise DatasetError("no manifest.json: not an 'ordnance score' output folder", folder)
    manifest = read_manifest(manifest_path)
    _, _, table = read_candidates(folder / "candidates.gpkg")
    status = np.asarray(table["review_status"]).astype(str)
    decided = np.isin(status, DECIDED)
    if not decided.any():
        raise DatasetError(
            "holds no confirmed or rejected candidate; import decisions with 'ordnance review import' first", folder
        )
    classes = np.asarray(table["class"]).astype(str)
    unknown = sorted({str(c) for c in classes[status == "confirmed"]} - set(class_names))
    if unknown:
        raise DatasetError(f"confirmed classes {unknown} are not among the configured {list(class_names)}", folder)
    card = json.loads(manifest["model"]["card"])
    chip_model = int(spec.chip_px or card["tile_size_px"])
    overlap_model = int(manifest["settings"]["overlap_px"] if spec.overlap_px is None else spec.overlap_px)
    if not 0 <= overlap_model < chip_model:
        raise DatasetError(f"chip overlap {overlap_model} px must be in [0, chip_px={chip_model})", folder)
    sources = np.asarray(table["source"]).astype(str)
    records: list[Record] = []
    for entry in manifest["inputs"]:
        path = Path(entry["path"])
        if entry["sha256"] is None:  # scored by URL: no hash to check the pixels against
            raise DatasetError(f"{entry['path']} was scored by URL; download it, score the local copy and review "
                               "that run to train on it", folder)  # fmt: skip
        if not path.exists():
            raise DatasetError(f"the run's source image is no longer at {path}", folder)
        if file_sha256(path) != entry["sha256"]:
            raise DatasetError(f"{path.name} changed since it was scored (sha256 differs); decisions cannot be placed",
                               folder)  # fmt: skip
        src_gsd = entry.get("gsd_m") or manifest["settings"].get("input_gsd_m")
        scale = card["gsd_m"] / src_gsd if src_gsd and card["gsd_m"] else 1.0
        chip, overlap = max(1, round(chip_model * scale)), round(overlap_model * scale)
        block = round((spec.block_px or 8 * chip_model) * scale)
        rows = np.flatnonzero(sources == path.name)
        boxes = _boxes(table, rows)
        st, cl = status[rows], classes[rows]
        for tile in tile_grid(int(entry["width"]), int(entry["height"]), chip, min(overlap, chip - 1)):
            x0, y0, x1, y1 = tile.bounds
            ioa = box_ioa(boxes, (x0, y0, x1, y1))
            inside = ioa >= spec.min_ioa
            if not (inside & np.isin(st, DECIDED)).any():
                continue
            item = inside & (st == "confirmed")
            # undecided candidates, and confirmed items only partly inside, are neither item nor background
            ignore = (ioa > 0) & ~np.isin(st, DECIDED) | (ioa > 0) & (st == "confirmed") & ~inside
            keep = item | ignore
            local = np.clip(boxes[keep] - [x0, y0, x0, y0], 0, [tile.width, tile.height] * 2)
            labels = np.array([list(class_names).index(c) if is_item else IGNORE  # classes checked above
                               for c, is_item in zip(cl[keep], item[keep])], np.int64)  # fmt: skip
            group = f"{REVIEW_GROUP}{path.stem}:block_{int(x0 // block)}_{int(y0 // block)}"
            norm = local / [tile.width, tile.height, tile.width, tile.height]
            gsd = src_gsd if src_gsd and abs(scale - 1) > 1e-6 else None
            records.append(Record(path, norm, labels, group, (x0, y0, tile.width, tile.height), tile.core, gsd))
    chips = DetectionDataset(records, class_names)
    if len({r.group for r in records}) > 1:
        train, val = split_by_block(chips, spec.val_fraction, spec.seed)
    else:
        train, val = chips, DetectionDataset([], class_names)
    undecided_val = [r for r in val.records if (r.labels < 0).any()]
    val = val.subset(lambda r: not (r.labels < 0).any())  # an undecided candidate cannot be scored
    counts = {s: int((status == s).sum()) for s in ("confirmed", "rejected", "unsure", "unreviewed")}
    summary = {
        "run": run_id(manifest),
        "folder": str(folder.resolve()),
        "scored_by_sha256": manifest["model"]["sha256"],
        "decisions": {s: counts[s] for s in DECIDED},
        "left_out": {s: counts[s] for s in ("unsure", "unreviewed")},
        "chips": {"train": len(train), "val": len(val), "val_left_out_undecided": len(undecided_val)},
    }
    return train, val, summary


def read_reviewed_runs(
    specs: list[ReviewedRun], class_names: list[str] | tuple[str, ...]
) -> tuple[DetectionDataset, DetectionDataset, list[dict]]:
    """Several reviewed runs pooled; each run's summary in order. The same run twice is refused."""
    train, val, summaries = [], [], []
    for spec in specs:
        t, v, summary = read_reviewed_run(spec, class_names)
        if summary["run"] in {s["run"] for s in summaries}:
            raise DatasetError(f"run {summary['run']} is listed twice", spec.run)
        train += t.records
        val += v.records
        summaries.append(summary)
    return DetectionDataset(train, class_names), DetectionDataset(val, class_names), summaries
