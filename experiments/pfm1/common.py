"""Shared paths and readers of the PFM-1 experiments (real RGB orthophoto tiles, ../shared/data/pfm1-binghamton)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA_YAML = REPO.parent / "shared" / "data" / "pfm1-binghamton" / "data.yaml"
CLASS_NAMES = ["ap_mine", "at_mine", "uxo"]
CLASS_MAP = {"pfm-1": "ap_mine", "ksf-casing": "uxo"}
FLIGHT_PATTERN = r"^(\w+?_\d{6}_F\d+)_"
# Sizes used for point truth (longest side, metres): PFM-1 120 x 61 mm; the KSF cassette casing is measured
# from its boxes at the estimated GSD (experiments/pfm1/gsd.py writes both).
PFM1_SIZE_M = (0.12, 0.061)


def load_results(path: Path) -> dict:
    """A results file of these experiments ({} before the first entry)."""
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict, indent: int = 2) -> None:
    """Write a results file whole or not at all (a temporary name, then a rename): a killed run keeps the last."""
    import json
    import os

    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=indent, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_split(split: str):
    """One split of the export with the project's classes."""
    from ordnance.datasets.yolo import read_yolo

    return read_yolo(DATA_YAML, split, class_names=CLASS_NAMES, class_map=CLASS_MAP, group_pattern=FLIGHT_PATTERN)


def _shared_common():
    """experiments/common.py, the helpers every benchmark shares (this module takes its name on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiments_common", HERE.parent / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_readme_block = _shared_common().write_readme_block
