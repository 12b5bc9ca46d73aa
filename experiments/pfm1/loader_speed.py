"""Training-loader throughput of the PFM-1 recipe: samples per second out of its DataLoader, with OpenCV on one
thread per worker (the data module's worker start) against OpenCV's default (all cores in every worker), in one run.

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

from common import HERE, REPO, write_readme_block

RESULTS = HERE / "loader_speed.json"


def _arm(workers: int, batches: int, batch_size: int, one_thread: bool, warm: int = 3) -> float:
    import torch
    from ordnance.datasets import datamodule as dm_module
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
        ],
        run=False,
    )
    data = cli.datamodule
    data.setup("fit")
    original = dm_module.one_thread_worker
    if not one_thread:  # OpenCV's default in each worker: as many threads as cores
        dm_module.one_thread_worker = lambda _id: None
    try:
        torch.manual_seed(0)
        loader = data.train_dataloader()
    finally:
        dm_module.one_thread_worker = original
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
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from loader_speed.json")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads(RESULTS.read_text()))
        return 0
    os.chdir(REPO)
    arms = {"opencv_default": False, "one_thread_per_worker": True}
    rates: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.repeats):
        for name, one in arms.items():
            rates[name].append(_arm(args.workers, args.batches, args.batch_size, one))
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
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, RESULTS)
    report(result)
    return 0


def report(result: dict) -> None:
    median = result["median_samples_per_s"]
    rounds = len(result["samples_per_s"]["opencv_default"])
    lines = [
        f"Training loader of configs/pfm1.yaml, {result['workers']} workers, batch {result['batch_size']}, "
        f"{result['machine']['cpus']} CPUs, {result['date']} (median of {rounds} rounds)",
        "",
        "| OpenCV threads per worker | samples/s |",
        "| --- | --- |",
        f"| all cores (OpenCV default) | {median['opencv_default']:.1f} |",
        f"| one | {median['one_thread_per_worker']:.1f} |",
        "",
        f"Ratio: {result['speedup']:.2f}",
    ]
    (HERE / "loader_speed.md").write_text("\n".join(lines) + "\n")
    write_readme_block("<!-- pfm1-loader:begin -->", "<!-- pfm1-loader:end -->", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
