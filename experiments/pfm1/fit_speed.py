"""Training steps per second of configs/pfm1.yaml under different thread settings, on this machine.

    .venv/bin/python experiments/pfm1/fit_speed.py [--steps 160] [--skip 30] [--variants recipe passive ...]

Each variant runs `ordnance train fit --config configs/pfm1.yaml` from random init (speed does not depend on the
weights) in its own process for --steps optimiser steps with no validation, and times the steps after the first
--skip (loader start, warm-up) with a callback: the median rate over the timed steps and their mean. The recipe's
loader (2 workers, batch 8 x 256 px crops, copy-paste, look-alikes) and bf16 autocast are kept as they are; only
the thread settings change. Variants run one after another; torch's own thread count (the baseline, what training
ran with before TrainingThreads) runs first and again last, so a machine that drifts during the run shows.
Writes fit_speed.json and fit_speed.md beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, write_readme_block

ROOT = HERE.parents[1]
BEGIN, END = "<!-- pfm1-threads:begin -->", "<!-- pfm1-threads:end -->"

# name -> (environment, extra CLI arguments, TrainingThreads.threads (None: its own choice), description)
VARIANTS: dict[str, tuple[dict, list[str], int | None, str]] = {
    "torch_default": ({}, [], 0, "torch's own threads (one per core) throughout, 2 loader workers"),
    "recipe": ({}, [], None, "TrainingThreads' rule: training threads = cores - loader workers, at least 1"),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, [], None, "the recipe, idle OpenMP threads sleep"),
    "torch_default_passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, [], 0, "torch's own threads, idle OpenMP threads sleep"),
    "cv1": ({}, ["--data.opencv_threads", "1"], None, "the recipe, one OpenCV thread per loader worker"),
    "workers1": ({}, ["--data.num_workers", "1"], None, "the recipe with one loader worker"),
}
BASELINE = "torch_default"


def child(steps: int, skip: int, threads: int | None, extra: list[str], out: Path) -> None:
    import lightning as L
    import torch
    from ordnance.training.callbacks import TrainingThreads
    from ordnance.training.cli import main

    class Clock(L.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            self.threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--config", str(ROOT / "configs/pfm1.yaml"), "--trainer.max_steps", str(steps),
                "--trainer.limit_val_batches", "0", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                "--trainer.logger.save_dir", tmp, "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", tmp, *extra]  # fmt: skip
        cli = main(args, run=False)
        next(c for c in cli.trainer.callbacks if isinstance(c, TrainingThreads)).threads = threads
        clock = Clock()
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, cli.datamodule)
    gaps = [b - a for a, b in zip(clock.times[skip:], clock.times[skip + 1 :])]
    out.write_text(json.dumps({
        "steps_timed": len(gaps),
        "median_steps_per_s": 1.0 / statistics.median(gaps),
        "mean_steps_per_s": len(gaps) / sum(gaps),
        "torch_threads": clock.threads,
        "model": cli.model.hparams.model,
    }))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--skip", type=int, default=30)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--name", default="fit_speed")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from the results JSON")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        env, extra, threads, _ = VARIANTS[args.child[0]]
        child(args.steps, args.skip, threads, extra, Path(args.child[1]))
        return 0
    if args.report:
        path = HERE / f"{args.name}.json"
        if not path.is_file():
            parser.error(f"{path}: no results to report; run without --report first")
        return report(json.loads(path.read_text()), args.name)
    order = [BASELINE, *[v for v in args.variants if v != BASELINE], BASELINE]
    rows = []
    for i, name in enumerate(order):
        env, extra, threads, description = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speed.json"
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--skip", str(args.skip),
                   "--child", name, str(out)]  # fmt: skip
            print(f"[{i + 1}/{len(order)}] {name}: {description}", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
        rows.append({"variant": name, "description": description, **result})
        print(f"    {result['median_steps_per_s']:.2f} steps/s (median), {result['mean_steps_per_s']:.2f} (mean)")
    base = statistics.mean(r["median_steps_per_s"] for r in rows if r["variant"] == BASELINE)
    for r in rows:
        r["vs_baseline"] = r["median_steps_per_s"] / base
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    result = {"cpu": cpu, "cpu_count": os.cpu_count(), "steps": args.steps, "skip": args.skip, "rows": rows}
    (HERE / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return report(result, args.name)


def report(result: dict, name: str) -> int:
    text = table(result)
    (HERE / f"{name}.md").write_text(text)
    if name == "fit_speed":
        write_readme_block(BEGIN, END, text.rstrip("\n"))
    print(text)
    return 0


def table(result: dict) -> str:
    lines = [
        f"Training steps per second of configs/pfm1.yaml ({result['rows'][0].get('model', 'centernet_resnet10_lite')})"
        f" with no checkpoint to start from, on {result['cpu']} "
        f"({result['cpu_count']} CPUs): steps {result['skip'] + 1} to {result['steps']} of each run timed; "
        f"the baseline ({BASELINE}) ran first and last.",
        "",
        "| variant | threads and workers | intra-op threads in training | steps/s (median) | steps/s (mean) "
        "| median / baseline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['description']} | {r['torch_threads']} | {r['median_steps_per_s']:.2f} | "
                     f"{r['mean_steps_per_s']:.2f} | {r['vs_baseline']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
