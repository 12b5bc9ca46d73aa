"""Train a peer detector (Ultralytics YOLO11, from scratch) on the synthetic recipe's tiles for a fixed number of
CPU minutes, and export it to ONNX. Runs in the peers' own environment (``make peers-setup``: torch, ultralytics,
SAHI), never in the package's.

    .venv-peers/bin/python experiments/peers/train.py yolo11n --minutes 38 --out experiments/peers/data/yolo11n

The tiles are the synthetic recipe's (configs/synthetic.yaml: 1,600 training and 200 validation tiles of 512 px
at 1 cm, YOLO labels), trained at 512 px, batch 8, on this machine's CPU with every core; Ultralytics' own
augmentation (mosaic, HSV, flips, scale) and schedule, cut by its ``time`` budget. No pretrained weights (none
can be downloaded here, and ours start from random init too). Writes ``best.onnx`` and ``train.json`` (minutes,
epochs, the last validation's mAP50) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or downloads: there is no internet here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["yolo11n", "yolo11s", "yolo11m"])
    parser.add_argument("--minutes", type=float, required=True, help="training budget (Ultralytics' time)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "synthetic-1cm-lookalikes3" / "data.yaml")
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"{args.data}: no such data.yaml (train configs/synthetic.yaml once to draw the tiles)")
    import yaml
    from ultralytics import YOLO

    args.out.mkdir(parents=True, exist_ok=True)
    # Ultralytics reads a relative ``path`` against the working folder; ours is relative to the data.yaml
    spec = yaml.safe_load(args.data.read_text())
    spec["path"] = str((args.data.parent / spec.get("path", ".")).resolve())
    data = args.out / "data.yaml"
    data.write_text(yaml.safe_dump(spec))
    model = YOLO(f"{args.model}.yaml")  # architecture only: random init
    start = time.perf_counter()
    model.train(
        data=str(data.resolve()),
        imgsz=args.imgsz,
        batch=args.batch,
        epochs=1000,  # the time budget ends training
        time=args.minutes / 60,
        device="cpu",
        workers=min(2, os.cpu_count() or 1),
        pretrained=False,
        amp=False,
        plots=False,
        seed=0,
        project=str(args.out.resolve()),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    minutes = (time.perf_counter() - start) / 60
    run = args.out / "train"
    best = run / "weights" / "best.pt"
    trained = YOLO(str(best))
    exported = Path(trained.export(format="onnx", imgsz=args.imgsz, dynamic=False, simplify=False))
    shutil.copy2(exported, args.out / "best.onnx")
    import csv

    with open(run / "results.csv", newline="") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]
    record = {
        "model": args.model,
        "minutes": minutes,
        "budget_minutes": args.minutes,
        "epochs": len(rows),
        "imgsz": args.imgsz,
        "batch": args.batch,
        "val_map50": float(rows[-1]["metrics/mAP50(B)"]) if rows else None,
        "best_val_map50": max(float(r["metrics/mAP50(B)"]) for r in rows) if rows else None,
        "data": str(args.data),
        "cpus": os.cpu_count(),
    }
    tmp = args.out / "train.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, args.out / "train.json")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
