"""The test mosaic with the orthophotos' fill as no data: what the exported files find when the white fill beyond
each tile's photographed footprint, and the black blocks masked out of the tiles, are not counted as ground.

The ablation's mosaic (``mosaic.py``) lays the test flight's tiles side by side as they are exported, fill
included: about a tenth of its pixels, scored like grass, and among the highest false alarms of several models
(docs/pfm1_false_alarms_*.jpg). An orthomosaic from a photogrammetry tool marks that area no data. ``mosaic.py
--mask-fill`` builds that mosaic; this script scores the exported float32 file of each finished stage on it with
``ordnance score`` and ``ordnance evaluate``, exactly as run.py scores the ablation's mosaic. Results go to
masked.json beside this script (finished entries are kept); the table is written by report.py.

    .venv/bin/python experiments/pfm1/masked.py fast_pair_seed0 fast_pair_seed1 fast_pair_ensemble
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import HERE, REPO, load_results, save_results
from run import RESULTS, score_mosaic

OUT = HERE / "masked.json"
MOSAICS = {"as_tiles": HERE / "data" / "pfm1_test.tif", "fill_masked": HERE / "data" / "pfm1_test_masked.tif"}


def _load() -> dict:
    return load_results(OUT)


def _save(results: dict) -> None:
    save_results(OUT, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", help="finished stages of run.py whose float32 export is in data/")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    stages = json.loads(RESULTS.read_text())
    for kind, mosaic in MOSAICS.items():
        if not mosaic.exists():
            flags = ["--mask-fill"] if kind == "fill_masked" else []
            subprocess.run([sys.executable, str(HERE / "mosaic.py"), *flags], check=True)
    results = _load()
    results["mosaics"] = {
        kind: json.loads(mosaic.with_suffix(".json").read_text()) | {"placement": None}
        for kind, mosaic in MOSAICS.items()
    }
    for name in args.stages:
        if name not in stages or "fp32" not in stages[name].get("mosaic", {}):
            raise SystemExit(f"{RESULTS}: stage {name} has no scored float32 export")
        model = HERE / "data" / f"{name}.onnx"
        if not model.exists():
            raise SystemExit(f"{model}: no such file (run.py --reexport {name} exports it again)")
        for kind, mosaic in MOSAICS.items():
            if kind not in results.setdefault(name, {}):
                results[name][kind] = score_mosaic(model, mosaic, HERE / "data" / f"scored_{name}_fp32_{kind}")
                _save(results)
            overall = results[name][kind]["curve"]["overall"]
            print(name, kind, f"AP {overall['ap']:.3f}", f"recall@10 FA/ha {overall['recall_at_10_fa_per_ha']:.3f}",
                  f"area {results[name][kind]['curve']['area_ha']:.4f} ha", flush=True)  # fmt: skip
    _save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
