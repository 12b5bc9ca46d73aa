"""Time to build CenterNet training targets for one batch: the builder in models/centernet.py against the
previous one (per-box torch operations on small tensors, kept here as the baseline), on real batches of the
PFM-1 recipe's training loader, in one run.

    .venv/bin/python experiments/train_step/targets.py [--batches 20] [--batch-size 8 32]

Writes targets.json and targets.md beside this script and the table into experiments/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import write_readme_block  # noqa: E402  experiments/common.py

BEGIN, END = "<!-- targets:begin -->", "<!-- targets:end -->"


def previous_targets(boxes, labels, num_classes, out_hw, max_objects=256, stride=4.0, radius=1, neighbour=0.5):
    """The builder as it was: torch tensors written box by box and slot by slot."""
    scale = 4.0 / stride
    n = len(boxes)
    h, w = out_hw
    around = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    slots = max_objects * (1 + len(around))
    heat = torch.zeros(n, num_classes, h, w)
    ignore = torch.zeros(n, 1, h, w)
    index = torch.zeros(n, slots, dtype=torch.long)
    mask = torch.zeros(n, slots)
    size = torch.zeros(n, slots, 2)
    offset = torch.zeros(n, slots, 2)
    ys, xs = torch.arange(h, dtype=torch.float32).view(-1, 1), torch.arange(w, dtype=torch.float32).view(1, -1)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        slot = 0
        for box in b[l < 0]:
            mx, my = max(float(box[2] - box[0]) / 2, stride), max(float(box[3] - box[1]) / 2, stride)
            c0 = max(0, int(math.floor((float(box[0]) - mx) / stride)))
            r0 = max(0, int(math.floor((float(box[1]) - my) / stride)))
            c1 = min(w, int(math.ceil((float(box[2]) + mx) / stride)))
            r1 = min(h, int(math.ceil((float(box[3]) + my) / stride)))
            ignore[i, 0, r0:r1, c0:c1] = 1.0
        keep = l >= 0
        b, l = b[keep], l[keep]
        for box, label in zip(b[:max_objects], l[:max_objects]):
            bw, bh = float(box[2] - box[0]) * scale, float(box[3] - box[1]) * scale
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = float(box[0] + box[2]) / 2 / stride, float(box[1] + box[3]) / 2 / stride
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(0.54 * bw / 4.0 / 6, 0.5), max(0.54 * bh / 4.0 / 6, 0.5)
            g = torch.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
            heat[i, label] = torch.maximum(heat[i, label], g)
            log_size = torch.tensor([math.log(bw), math.log(bh)])
            for dy, dx in [(0, 0), *around]:
                jx, jy = ix + dx, iy + dy
                if not (0 <= jx < w and 0 <= jy < h):
                    continue
                index[i, slot] = jy * w + jx
                mask[i, slot] = 1.0 if (dy, dx) == (0, 0) else neighbour
                size[i, slot] = log_size
                offset[i, slot] = torch.tensor([cx - jx, cy - jy])
                slot += 1
    return {"heatmap": heat, "ignore": ignore, "index": index, "mask": mask, "size": size, "offset": offset}


def real_batches(batch_size: int, count: int) -> list:
    """(boxes, labels) of ``count`` batches from the PFM-1 recipe's training loader (augmented, pasted)."""
    from ordnance.training.cli import main

    cli = main(["--config", str(REPO / "configs" / "pfm1.yaml"), "--trainer.logger", "false",
                "--data.num_workers", "0", "--data.batch_size", str(batch_size)], run=False)  # fmt: skip
    data = cli.datamodule
    data.setup("fit")
    torch.manual_seed(0)
    batches = []
    for images, boxes, labels, _ in data.train_dataloader():
        batches.append((boxes, labels, images.shape[-1] // 4))
        if len(batches) == count:
            return batches
    return batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args(argv)
    os.chdir(REPO)
    from ordnance.models.centernet import centernet_targets

    rows = []
    for batch_size in args.batch_size:
        batches = real_batches(batch_size, args.batches)
        times = {"previous": [], "current": []}
        worst = 0.0
        for boxes, labels, side in batches:
            for name, build in (("previous", previous_targets), ("current", centernet_targets)):
                start = time.perf_counter()
                out = build(boxes, labels, 3, (side, side))
                times[name].append(time.perf_counter() - start)
                if name == "previous":
                    ref = out
            worst = max(worst, max(float((out[k].double() - ref[k].double()).abs().max()) for k in out))
        boxes_per_batch = statistics.mean(sum(len(b) for b in bx) for bx, _, _ in batches)
        rows.append({
            "batch_size": batch_size,
            "boxes_per_batch": boxes_per_batch,
            "previous_ms": statistics.median(times["previous"]) * 1000,
            "current_ms": statistics.median(times["current"]) * 1000,
            "max_abs_difference": worst,
        })  # fmt: skip
        print(rows[-1], flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "batches": args.batches, "rows": rows}  # fmt: skip
    (HERE / "targets.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"{result['machine']}; {result['date']}; median over {args.batches} batches of the PFM-1 recipe's training"
        " loader (256 px crops, targets at stride 4)",
        "",
        "| batch | boxes per batch | previous builder (ms) | current builder (ms) | speed x | largest difference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['batch_size']} | {r['boxes_per_batch']:.1f} | {r['previous_ms']:.1f} | {r['current_ms']:.2f} | "
        f"{r['previous_ms'] / r['current_ms']:.1f} | {r['max_abs_difference']:.1e} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "targets.md").write_text(text)
    write_readme_block(BEGIN, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
