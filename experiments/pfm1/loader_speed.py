"""Training-loader throughput of the PFM-1 recipe: samples per second out of its DataLoader, with OpenCV's
default threads in each worker (one per core) against one thread per worker (``data.opencv_threads: 1``), in one run.

    .venv/bin/python experiments/pfm1/loader_speed.py [--workers 2] [--batches 40] [--batch-size 8]

Writes loader_speed.json and loader_speed.md beside this script, and the table into experiments/README.md
(``--report`` rewrites both from the JSON). Each arm builds the recipe's data module (configs/pfm1.yaml:
copy-paste, augmentation, 256 px crops of 768 px tiles), skips the first batches (worker start) and times the
next ``--batches``; arms alternate for ``--repeats`` rounds and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from common import HERE, REPO, write_readme_block

RESULTS = HERE / "loader_speed.json"
# Other machines' runs (``--out``), shown beside this machine's: the 16-core GPU machine of the GPU row, its
# loader reading the valid flight's tiles (the training flights were not on that machine for this run).
OTHERS = {"loader_speed_16cores.json": "the 16-core GPU machine, valid-flight tiles as input"}


def _arm(workers: int, batches: int, batch_size: int, one_thread: bool, overrides: list[str], warm: int = 3) -> float:
    import torch
    from ordnance.training.cli import main

    cli = main(
        [
            "--config",
            str(REPO / "configs" / "pfm1.yaml"),
            "--model.init_checkpoint",
            "null",
            "--trainer.logger",
            "false",
            "--data.num_workers",
            str(workers),
            "--data.batch_size",
            str(batch_size),
            *(["--data.opencv_threads", "1"] if one_thread else []),
            *overrides,
        ],
        run=False,
    )
    data = cli.datamodule
    data.setup("fit")
    torch.manual_seed(0)
    loader = data.train_dataloader()
    it = iter(loader)
    for _ in range(warm):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch_size / (time.perf_counter() - start)
    del it, loader
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON here instead (no tables)")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from loader_speed.json")
    args, overrides = parser.parse_known_args(argv)  # the rest: recipe overrides (--data.data_yaml ...)
    if args.report:
        report(json.loads(RESULTS.read_text()))
        return 0
    os.chdir(REPO)
    arms = {"opencv_default": False, "one_thread_per_worker": True}
    rates: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.repeats):
        for name, one in arms.items():
            rates[name].append(_arm(args.workers, args.batches, args.batch_size, one, overrides))
            print(f"round {r + 1}: {name} {rates[name][-1]:.1f} samples/s", flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "samples_per_s": rates,
        "median_samples_per_s": median,
        "speedup": median["one_thread_per_worker"] / median["opencv_default"],
        "date": time.strftime("%Y-%m-%d"),
    }
    target = args.out or RESULTS
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, target)
    if args.out is None:
        report(result)
    else:
        print(json.dumps(result))
    return 0


def report(result: dict) -> None:
    runs = [("this machine, training flights as input", result)]
    for name, label in OTHERS.items():
        if (HERE / name).exists():
            runs.append((label, json.loads((HERE / name).read_text())))
    lines = [
        "Training loader of configs/pfm1.yaml: samples per second out of its DataLoader (median of the rounds).",
        "",
        "| machine | CPUs | workers | batch | batches timed | rounds | OpenCV default | one OpenCV thread per worker"
        " | one / default |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in runs:
        median = r["median_samples_per_s"]
        lines.append(
            f"| {label} ({r['date']}) | {r['machine']['cpus']} | {r['workers']} | {r['batch_size']} | {r['batches']} |"
            f" {len(r['samples_per_s']['opencv_default'])} | {median['opencv_default']:.1f} |"
            f" {median['one_thread_per_worker']:.1f} | {r['speedup']:.2f} |"
        )
    (HERE / "loader_speed.md").write_text("\n".join(lines) + "\n")
    write_readme_block("<!-- pfm1-loader:begin -->", "<!-- pfm1-loader:end -->", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
