"""Distributed data-parallel training (Lightning DDP, gloo on CPU): two processes with half of each global batch
train the same model as one process with the whole batch. Losses and the validation's metrics must agree within
1e-4 (relative); they differ by floating-point summation order only. BatchNorm keeps its running statistics
(``model.freeze_batchnorm``): synchronised BatchNorm, which makes per-process batch statistics global on GPUs
(the DDP preset), does not run on CPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOLERANCE = 1e-4
# Two training commands, one of them two processes: about a minute on 2 cores. `make test` runs it after the
# default suite.
pytestmark = [pytest.mark.train, pytest.mark.slow]

NO_AUGMENTATION = json.dumps(
    {"flips": False, "rotate90": False, "scale": [1.0, 1.0], "colour": 0.0, "blur": 0.0, "noise": 0.0, "jpeg": 0.0}
)


def _train(tiny_data, root: Path, *extra: str) -> dict[str, list[float]]:
    """``ordnance train fit`` on the tiny recipe: 3 steps, each over all 8 training tiles (so both runs see the
    same global batch whatever order their samplers draw), deterministic samples (whole tiles, no augmentation).
    Returns the CSV logger's metrics by name, in step order."""
    command = [
        str(BIN / "ordnance"), "train", "fit", "--config", str(REPO / "configs" / "tiny.yaml"),
        "--data.data_yaml", str(tiny_data), "--data.augment", NO_AUGMENTATION, "--data.crop_px", "256",
        "--trainer.max_steps", "3", "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "1.0",
        "--model.freeze_batchnorm", "true", "--model.lr", "1e-4", "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
        "--trainer.default_root_dir", str(root), *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    import csv

    rows = list(csv.DictReader(open(next(root.glob("lightning_logs/version_*/metrics.csv")))))
    metrics: dict[str, list[float]] = {}
    for row in sorted(rows, key=lambda r: int(r["step"])):
        for key, value in row.items():
            if value and key not in ("step", "epoch"):
                metrics.setdefault(key, []).append(float(value))
    return metrics


def test_two_ddp_processes_train_as_one_process_with_the_whole_batch(tiny_data, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "ddp").mkdir()
    one = _train(tiny_data, tmp_path / "one", "--data.batch_size", "8", "--trainer.devices", "1")
    ddp = _train(tiny_data, tmp_path / "ddp", "--data.batch_size", "4", "--trainer.devices", "2",
                 "--trainer.strategy", "ddp_find_unused_parameters_true")  # fmt: skip
    assert len(one["train/loss"]) == len(ddp["train/loss"]) == 3
    assert one["train/loss"][0] != one["train/loss"][-1]  # the steps changed the model
    compared = [k for k in one if k.startswith(("train/", "val/map", "val/hazard", "val/recall", "val/threshold"))]
    assert "val/map50" in compared and "val/hazard_ap" in compared and "train/heatmap" in compared
    for key in compared:
        for a, b in zip(one[key], ddp[key], strict=True):
            assert abs(a - b) <= TOLERANCE * max(1.0, abs(a)), (key, one[key], ddp[key])
