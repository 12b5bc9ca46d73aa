"""Measure the GSD of the PFM-1 tiles from the mines' boxes (the export states none).

Each PFM-1 box (120 x 61 mm item, any rotation) gives one GSD estimate (ordnance.datasets.gsd.gsd_from_boxes).
The recipe's ``source_gsd_m`` is the median over the training flights only; the valid and test flights are
measured too, to check that they were flown at about the same height (their figures are not used).

    .venv/bin/python experiments/pfm1/gsd.py        # writes experiments/pfm1/gsd.json
"""

from __future__ import annotations

import json
import sys

from common import HERE, PFM1_SIZE_M, read_split
from ordnance.datasets.gsd import estimate_gsd


def main() -> int:
    out = {}
    for split in ("train", "valid", "test"):
        data = read_split(split)
        estimate = estimate_gsd(data, "ap_mine", *PFM1_SIZE_M)
        out[split] = estimate.as_dict()
        print(
            f"{split}: {estimate.gsd_m * 1000:.2f} mm/px "
            + ", ".join(f"{g} {v * 1000:.2f} ({estimate.n_boxes[g]})" for g, v in estimate.per_group.items())
        )
    out["source_gsd_m"] = round(out["train"]["gsd_m"], 5)
    (HERE / "gsd.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"source_gsd_m (training flights): {out['source_gsd_m']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
