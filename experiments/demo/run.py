"""The main job (``make demo``) on its built-in defaults, timed, with its figures written into README.md.

Runs ``python -m ordnance.training.demo`` (synthetic tiles and a survey mosaic with truth, a CPU-sized training run
of the default RGB detector, export through the parity gate, scoring, evaluation) into experiments/demo/data,
reads its summary.json and writes results.json beside this script and the sentence between the
``<!-- demo:begin -->`` and ``<!-- demo:end -->`` markers of README.md.

    .venv/bin/python experiments/demo/run.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from common import write_readme_block  # noqa: E402

BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"


def sentence(results: dict) -> str:
    s = results["summary"]
    timings = s["timings_s"]
    return (
        f"On this {results['cores']}-core CPU ({results['date']}) the job took {results['wall_s']:.0f} s: "
        f"{timings['train_s'] / 60:.1f} minutes of training ({s['training']['steps']:,} steps of "
        f"`{s['training']['detector']}`, {s['training']['precision']}), {timings['score_s']:.0f} s scoring the "
        f"{s['scoring']['area_ha']:.2f} ha survey at {s['scoring']['tile_px']} px tiles "
        f"({s['hectares_per_hour']:.0f} ha/h with the float32 file). The short training gives a weak detector: "
        f"{s['items_found']} of {s['items_present']} items found at {s['false_alarms_per_ha']:.0f} false alarms per "
        "hectare (`experiments/demo/run.py`, results.json)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = parser.parse_args(argv)
    out = HERE / "data" / "demo"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ordnance.training.demo", "--out", str(out)], check=True, cwd=REPO)
    wall_s = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    results = {"date": date.today().isoformat(), "machine": platform.machine(), "cores": os.cpu_count(),
               "wall_s": wall_s, "summary": summary}  # fmt: skip
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = sentence(results)
    if not args.no_readme:
        write_readme_block(BEGIN, END, text, REPO / "README.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
