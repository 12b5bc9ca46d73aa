"""Seconds per training step at 512 px (batch 4) for every registered detector, on this machine.

    python experiments/train_step/run.py [--steps 3] [--batch 4] [--size 512]

Each detector runs forward, loss and backward plus an AdamW step on synthetic tiles with boxes; the first
step is a warm-up and is not timed. Writes experiments/train_step/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from ordnance.datasets.synth.layout import make_scene
from ordnance.datasets.synth.scene import render_block
from ordnance.datasets.synth.writers import CLASS_NAMES
from ordnance.models import build_detector, list_detectors

HERE = Path(__file__).resolve().parent


def batch(size: int, n: int, seed: int = 0):
    images, boxes, labels = [], [], []
    for i in range(n):
        image, items = render_block(make_scene(seed + i, 0.01, size, size, patterns=3), 0, 0, size, size)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        kept = [b for b in items if b[2] > b[0] and b[3] > b[1]]
        boxes.append(torch.tensor([b[:4] for b in kept], dtype=torch.float32).reshape(-1, 4).clamp(0, size))
        labels.append(torch.tensor([CLASS_NAMES.index(b[4]) for b in kept], dtype=torch.long))
    return torch.stack(images), boxes, labels


def time_detector(name: str, data, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, tile_size_px=data[0].shape[-1]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = sum(model.losses(*data).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return {"s_per_step": float(np.median(times)), "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    data = batch(args.size, args.batch)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "batch": args.batch,
        "size": args.size,
        "detectors": {},
    }
    for name in list_detectors():
        results["detectors"][name] = time_detector(name, data, args.steps)
        print(name, results["detectors"][name], flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"{results['machine']}; batch {args.batch} at {args.size} px; median of {args.steps} steps.",
        "",
        "| detector | s/step | params (M) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {v['s_per_step']:.2f} | {v['params_m']:.1f} |" for k, v in results["detectors"].items()]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
