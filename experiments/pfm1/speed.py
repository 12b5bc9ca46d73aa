"""Hectares per hour of each exported PFM-1 model on the test mosaic, one after another on an otherwise idle
machine: `ordnance score` wall time and its inference seconds (manifest), fp32 and int8 where exported.
Writes speed.json beside this script; report.py puts it in the working-GSD table.

    .venv/bin/python experiments/pfm1/speed.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import HERE

BIN = Path(sys.executable).absolute().parent
STAGES = ("synth_real", "synth_real_5mm", "synth_real_1cm")


def main() -> int:
    data = HERE / "data"
    mosaic = data / "pfm1_test.tif"
    out: dict = {"cpu_count": os.cpu_count(), "mosaic": mosaic.name}
    for stage in STAGES:
        for kind, suffix in (("fp32", ".onnx"), ("int8", ".int8.onnx")):
            model = data / f"{stage}{suffix}"
            if not model.exists():
                continue
            scored = data / f"speed_{stage}_{kind}"
            start = time.perf_counter()
            subprocess.run([str(BIN / "ordnance"), "score", str(mosaic), "--model", str(model), "-o", str(scored),
                            "--no-progress", "--no-resume", "--no-review", "--format", "csv"], check=True)  # fmt: skip
            wall = time.perf_counter() - start
            manifest = json.loads((scored / "manifest.json").read_text())
            area = manifest["area_scanned_ha"]
            infer = manifest["timings"]["infer_s"]
            out.setdefault(stage, {})[kind] = {
                "wall_s": wall,
                "infer_s": infer,
                "tiles": manifest["tiles"],
                "area_ha": area,
                "ha_per_h_wall": area / wall * 3600,
                "ha_per_h_network": area / infer * 3600,
            }
            print(f"{stage} {kind}: {area / wall * 3600:.1f} ha/h ({manifest['tiles']} tiles, {wall:.1f} s)")
    (HERE / "speed.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
