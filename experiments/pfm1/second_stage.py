"""A second, low-rate stage after the recipe: does it lift finished PFM-1 runs on the valid and the test flight?

For each finished stage of results.json (or NAME=CHECKPOINT): ``configs/finetune_review.yaml`` with no reviewed
survey (its replay of the training flights only, learning rate 2e-4, copy-paste p 0.3, no look-alikes, no flight
weighting) for ``--steps`` steps from the stage's checkpoint, the stage's own model; then the parent and its
second stage are each validated on the valid flight and tested on the test flight in float32 with one view
(``flips.py``'s ``evaluate``), so every pair is compared on the same code. Results go to second_stage.json beside
this script (finished entries are kept: the run resumes); the table is written by report.py.

    .venv/bin/python experiments/pfm1/second_stage.py fast_pair_seed0 fast_pair_seed1 --steps 120
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from common import HERE, REPO, load_results, save_results
from flips import evaluate
from run import BIN, RESULTS

OUT = HERE / "second_stage.json"
CONFIG = REPO / "configs" / "finetune_review.yaml"


def _load() -> dict:
    return load_results(OUT)


def _save(results: dict) -> None:
    save_results(OUT, results)


def model_name(ckpt: str) -> str:
    import torch

    hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    return hparams["model"]


def second_stage(ckpt: str, root, steps: int, seed: int) -> tuple[str, float]:
    """``steps`` steps of the finetune_review recipe (replay only) from ``ckpt``; (last checkpoint, minutes)."""
    args = [str(BIN / "ordnance"), "train", "fit", "--config", str(CONFIG), "--model.init_checkpoint", ckpt,
            "--model.model", model_name(ckpt), "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps), "--trainer.max_epochs", "1000",
            "--trainer.max_time", "null", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return str(next(root.glob("**/last.ckpt"))), (time.perf_counter() - start) / 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", help="stages of run.py (checkpoints in results.json), or NAME=CHECKPOINT")
    parser.add_argument("--steps", type=int, default=120, help="steps of the second stage (batch 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.chdir(REPO)
    stages = json.loads(RESULTS.read_text())
    results = _load()
    for name in args.stages:
        name, _, path = name.partition("=")
        parent = path or stages[name]["checkpoint"]
        entry = results.setdefault(name, {"parent": {"checkpoint": parent}, "steps": args.steps, "seed": args.seed})
        if "checkpoint" not in entry.setdefault("second", {}):
            root = HERE / "data" / f"second_stage_{name}"
            ckpt, minutes = second_stage(parent, root, args.steps, args.seed)
            entry["second"].update({"checkpoint": ckpt, "minutes": minutes})
            _save(results)
        for role in ("parent", "second"):
            for subcommand, field in (("validate", "valid"), ("test", "test")):
                if field not in entry[role]:
                    entry[role][field] = evaluate(subcommand, entry[role]["checkpoint"], 1)
                    _save(results)
                    ap = {k: round(v, 3) for k, v in entry[role][field].items() if "ap50_ap_mine" in k}
                    print(name, role, field, ap, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
