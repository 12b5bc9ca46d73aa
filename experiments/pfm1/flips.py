"""Test-time flips on real RGB: PFM-1 AP50 on the valid and test flights of finished ablation stages, evaluated on
the image alone (1 view), with its left-right flip (2 views) and with all four flips (4 views).

For each stage in results.json and each view count: ``ordnance train validate`` on the valid flight and
``ordnance train test`` on the test flight (float32, ``--model.test_flips N``); the maps of the views are
averaged before peak picking (models/centernet.py, ``flip_averaged``). Optionally (``--mosaic``) the checkpoint is
exported with ``--test-flips N`` through the parity gate and the test mosaic is scored and evaluated like the
ablation's rows. Results go to flips.json beside this script (a finished entry is kept: the run resumes); the
table is written by report.py.

    .venv/bin/python experiments/pfm1/flips.py synth_real_f03 --flips 1 2 4 [--mosaic]
    .venv/bin/python experiments/pfm1/flips.py NAME=path/to.ckpt --flips 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import HERE, REPO, load_results, save_results
from run import PFM1, RESULTS, mosaic_eval

OUT = HERE / "flips.json"


def _load() -> dict:
    return load_results(OUT)


def _save(results: dict) -> None:
    save_results(OUT, results)


def evaluate(subcommand: str, ckpt: str, flips: int) -> dict:
    from ordnance.training.cli import main

    cli = main(
        [subcommand, "--config", str(PFM1), "--ckpt_path", ckpt, "--trainer.logger", "false",
         "--trainer.precision", "32-true", "--model.test_flips", str(flips)]
    )  # fmt: skip
    prefix = "val/" if subcommand == "validate" else "test/"
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", help="stages of run.py (checkpoints in results.json), or NAME=CHECKPOINT")
    parser.add_argument("--flips", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 4])
    parser.add_argument("--mosaic", action="store_true", help="also export with the flips and score the test mosaic")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    stages = json.loads(RESULTS.read_text())
    results = _load()
    for name in args.stages:
        name, _, path = name.partition("=")  # NAME=CHECKPOINT evaluates a checkpoint that is not an ablation stage
        ckpt = path or stages[name]["checkpoint"]
        for flips in args.flips:
            key = f"{name}/{flips}"
            entry = results.setdefault(key, {"stage": name, "flips": flips, "checkpoint": ckpt})
            for subcommand, field in (("validate", "valid"), ("test", "test")):
                if field not in entry:
                    start = time.perf_counter()
                    entry[field] = evaluate(subcommand, ckpt, flips)
                    entry[f"{field}_seconds"] = time.perf_counter() - start
                    _save(results)
                    print(key, field, {k: round(v, 3) for k, v in entry[field].items() if "ap50" in k}, flush=True)
            if args.mosaic and "mosaic" not in entry:
                entry["mosaic"] = mosaic_eval(f"{name}_flips{flips}", ckpt, PFM1, False, test_flips=flips)
                _save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
