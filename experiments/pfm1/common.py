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


def read_split(split: str):
    """One split of the export with the project's classes."""
    from ordnance.datasets.yolo import read_yolo

    return read_yolo(DATA_YAML, split, class_names=CLASS_NAMES, class_map=CLASS_MAP, group_pattern=FLIGHT_PATTERN)


def write_readme_block(begin: str, end: str, text: str) -> None:
    """Replace the text between two markers of experiments/README.md (left as is without the markers)."""
    readme = REPO / "experiments" / "README.md"
    body = readme.read_text()
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
