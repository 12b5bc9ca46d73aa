"""What drawing look-alikes costs the PFM-1 training loader: each look-alike's drawing time at the recipe's GSD, and
the recipe's DataLoader samples per second, with every item supersampled 4x (``MAX_SS_PX`` lifted: how items were
drawn before the cap) against the capped canvas (the default), in one run.

    .venv/bin/python experiments/pfm1/lookalike_speed.py [--workers 2] [--batches 30] [--repeats 2]

Writes lookalike_speed.json and lookalike_speed.md beside this script and the table into experiments/README.md
(``--report`` rewrites them from the JSON). The loader arms alternate for ``--repeats`` rounds (median reported);
the workers fork from this process, so the arm's ``MAX_SS_PX`` is theirs. Drawing time is CPU time per stamp
(``time.process_time``) over ``--stamps`` stamps of each look-alike, the same random draws in both arms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager

import numpy as np
from common import HERE, REPO, write_readme_block
from loader_speed import _arm

RESULTS = HERE / "lookalike_speed.json"
GSD_M = 0.00294  # the recipe's working GSD
UNCAPPED = 10**9
BEGIN, END = "<!-- pfm1-lookalikes:begin -->", "<!-- pfm1-lookalikes:end -->"


@contextmanager
def supersampling_cap(cap: int):
    """``MAX_SS_PX`` set to ``cap`` inside the block (loader workers forked there inherit it), restored after."""
    from ordnance.datasets.synth import items

    saved, items.MAX_SS_PX = items.MAX_SS_PX, cap
    try:
        yield
    finally:
        items.MAX_SS_PX = saved


def stamp_ms(names: list[str], cap: int, stamps: int) -> dict[str, float]:
    """CPU milliseconds per drawn stamp of each look-alike at the recipe's GSD under ``MAX_SS_PX = cap``."""
    from ordnance.datasets.synth import items

    out = {}
    with supersampling_cap(cap):
        for name in names:
            rng = np.random.default_rng(0)
            start = time.process_time()
            for _ in range(stamps):
                items.render_item(items.CATALOG[name], GSD_M, rng.uniform(0, 2 * np.pi), (0.6, 0.8), rng)
            out[name] = (time.process_time() - start) / stamps * 1000
    return out


def loader_rate(cap: int, workers: int, batches: int, batch_size: int) -> float:
    """The recipe's DataLoader samples per second under ``MAX_SS_PX = cap``."""
    with supersampling_cap(cap):
        return _arm(workers, batches, batch_size, False, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stamps", type=int, default=10)
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from lookalike_speed.json")
    args = parser.parse_args(argv)
    if args.report:
        if not RESULTS.exists():
            parser.error(f"{RESULTS}: no results to report; run without --report first")
        report(json.loads(RESULTS.read_text()))
        return 0
    os.chdir(REPO)
    from ordnance.datasets.composite import CopyPaste
    from ordnance.datasets.synth import items

    names = sorted(set(CopyPaste().lookalike_names) | {"oak_leaf"})
    arms = {"uncapped": UNCAPPED, "capped": items.MAX_SS_PX}
    stamps = {arm: stamp_ms(names, cap, args.stamps) for arm, cap in arms.items()}
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(args.repeats):
        for arm, cap in arms.items():
            rates[arm].append(loader_rate(cap, args.workers, args.batches, args.batch_size))
            print(f"round {r + 1}: {arm} {rates[arm][-1]:.1f} samples/s", flush=True)
    median = {arm: statistics.median(v) for arm, v in rates.items()}
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "max_ss_px": items.MAX_SS_PX,
        "gsd_m": GSD_M,
        "stamp_ms": stamps,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "samples_per_s": rates,
        "median_samples_per_s": median,
        "speedup": median["capped"] / median["uncapped"],
        "date": time.strftime("%Y-%m-%d"),
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, RESULTS)
    report(result)
    return 0


def report(result: dict) -> None:
    stamps, median = result["stamp_ms"], result["median_samples_per_s"]
    lines = [
        f"Look-alikes drawn at {result['gsd_m'] * 1000:.2f} mm: CPU ms per stamp, every item supersampled 4x against"
        f" canvases capped at {result['max_ss_px']} px a side; {result['machine']['cpus']} CPUs, {result['date']}.",
        "",
        "| look-alike | " + " | ".join(stamps["capped"]) + " |",
        "| --- | " + " | ".join("---" for _ in stamps["capped"]) + " |",
    ]
    for arm, label in (("uncapped", "4x everywhere"), ("capped", "capped (default)")):
        lines.append(f"| {label} | " + " | ".join(f"{stamps[arm][n]:.0f}" for n in stamps["capped"]) + " |")
    lines += [
        "",
        f"configs/pfm1.yaml's DataLoader ({result['workers']} workers, batch {result['batch_size']}, up to 3"
        f" look-alikes per image): samples per second, median of {len(result['samples_per_s']['capped'])} rounds of"
        f" {result['batches']} batches.",
        "",
        "| 4x everywhere | capped (default) | capped / 4x |",
        "| --- | --- | --- |",
        f"| {median['uncapped']:.1f} | {median['capped']:.1f} | {result['speedup']:.2f} |",
    ]
    text = "\n".join(lines)
    (HERE / "lookalike_speed.md").write_text(text + "\n")
    write_readme_block(BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
