"""Seconds per training step at 512 px (batch 4) for every registered detector, on this machine.

    python experiments/train_step/run.py [--steps 3] [--batch 4] [--size 512] [--device auto|cpu|cuda]
        [--precision fp32|bf16] [--channels-last] [--name results]

Each detector runs forward, loss and backward plus an AdamW step on synthetic tiles with boxes, on the chosen
device (``auto``: CUDA when there is one), in float32 or under bf16 autocast (what ``precision: bf16-mixed``
does in training). The first two steps are warm-up (cuDNN autotuning, allocator) and are not timed; on CUDA
each step is synchronised before the clock stops. Each step is timed alone and the median is reported.
Writes experiments/train_step/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
WARMUP = 2


def batch(size: int, n: int, seed: int = 0):
    images, boxes, labels = [], [], []
    for i in range(n):
        image, items = render_block(make_scene(seed + i, 0.01, size, size, patterns=3), 0, 0, size, size)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        kept = [b for b in items if b[2] > b[0] and b[3] > b[1]]
        boxes.append(torch.tensor([b[:4] for b in kept], dtype=torch.float32).reshape(-1, 4).clamp(0, size))
        labels.append(torch.tensor([CLASS_NAMES.index(b[4]) for b in kept], dtype=torch.long))
    return torch.stack(images), boxes, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_detector(name: str, data, steps: int, device: torch.device, precision: str, channels_last: bool) -> dict:
    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, tile_size_px=data[0].shape[-1]).to(device).train()
    images, boxes, labels = data[0].to(device), [b.to(device) for b in data[1]], [x.to(device) for x in data[2]]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    times = []
    for step in range(steps + WARMUP):
        _sync(device)
        start = time.perf_counter()
        with autocast():
            loss = sum(model.losses(images, boxes, labels).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    out = {"s_per_step": float(np.median(times)), "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--detectors", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--name", default="results", help="output file stem in experiments/train_step/")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    data = batch(args.size, args.batch)
    results = {
        "machine": f"{hardware}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        "device": device.type,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "batch": args.batch,
        "size": args.size,
        "steps": args.steps,
        "detectors": {},
    }
    for name in args.detectors or list_detectors():
        results["detectors"][name] = time_detector(name, data, args.steps, device, args.precision, args.channels_last)
        print(name, results["detectors"][name], flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (HERE / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    layout = "channels-last" if args.channels_last else "contiguous"
    lines = [
        f"{results['machine']}; {device.type}, {args.precision}, {layout}; batch {args.batch} at {args.size} px; "
        f"median of {args.steps} steps after {WARMUP} warm-up steps.",
        "",
        "| detector | s/step | images/s | params (M) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {k} | {v['s_per_step']:.3f} | {args.batch / v['s_per_step']:.1f} | {v['params_m']:.1f} |"
        for k, v in results["detectors"].items()
    ]
    (HERE / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
