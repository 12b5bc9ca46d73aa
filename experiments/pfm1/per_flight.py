"""PFM-1 and casing AP50 of one checkpoint on each training flight, at the recipe's working GSD, no augmentation.

How well the model fits each ground it trained on: a flight far below the others is ground the recipe has not
learnt. With --held-out, the valid and the test flight are measured in the same pass, so a model that has fitted
its training flights and still misses the test flight (a gap of ground) reads apart from one that has not fitted
them (a gap of training). Writes per_flight.json beside this script (one entry per checkpoint; held-out flights
carry their split).

    .venv/bin/python experiments/pfm1/per_flight.py runs/2/<run>/checkpoints/best-epoch=NNN.ckpt [--held-out]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import HERE, REPO

OUT = HERE / "per_flight.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "pfm1.yaml")
    parser.add_argument("--held-out", action="store_true", help="also the valid and the test flight")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    import torch
    import yaml
    from ordnance.datasets.datamodule import DetectionDataModule
    from ordnance.training.task import DetectionTask
    from torchmetrics.detection import MeanAveragePrecision

    data = yaml.safe_load(args.config.read_text())["data"]
    data.pop("augment", None)
    data.pop("copy_paste", None)
    module = DetectionDataModule(**data)
    module.setup("fit")
    task = DetectionTask.load_from_checkpoint(args.checkpoint, map_location="cpu", init_checkpoint=None)
    task.eval()
    names = list(module.train_data.class_names)
    datasets = [("train", module.train_data)]
    if args.held_out:
        module.test_dataloader()  # reads the test split
        datasets += [("valid", module.val_data), ("test", module.test_data)]
    flights = {}
    for split, dataset in datasets:
        for group in sorted({r.group for r in dataset.records}):
            subset = dataset.subset(lambda r, g=group: r.group == g)
            metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True, backend="faster_coco_eval")
            with torch.no_grad():
                for images, boxes, labels, _ in module._eval_loader(subset):
                    preds = [{"boxes": b.float(), "scores": s.float(), "labels": lab} for b, s, lab in task(images)]
                    truth = [{"boxes": b[lab >= 0], "labels": lab[lab >= 0]} for b, lab in zip(boxes, labels)]
                    metric.update(preds, truth)
            result = metric.compute()
            classes, values = result["classes"].reshape(-1), result["map_per_class"].reshape(-1)
            ap = {names[int(c)]: float(v) for c, v in zip(classes, values)}
            flights[group] = {"tiles": len(subset), "ap50": ap, "split": split}
            print(split, group, len(subset), {k: round(v, 3) for k, v in ap.items()}, flush=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[str(args.checkpoint)] = flights
    OUT.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
