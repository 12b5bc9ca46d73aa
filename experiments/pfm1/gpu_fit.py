"""The PFM-1 recipe with its GPU preset, on a time budget: ``configs/pfm1.yaml`` + ``configs/trainer/gpu.yaml``.

Trains from the synthetic checkpoint, logs to CSV beside the run (no tracking server needed on the GPU machine),
then writes into OUT:

- ``best.ckpt``: the best checkpoint on the valid flight without its optimiser state (weights, hyper-parameters
  and the validated operating point: all that ``ordnance train test`` and ``ordnance export`` read), and, with
  ``--part-mib``, the same file cut into parts for transfer (``best.ckpt.part0``...; joined with ``--join``);
- ``gpu_fit.json``: the device, versions, precision, wall minutes, epochs and steps done, and each validation's
  metrics.

On the GPU machine:

    python experiments/pfm1/gpu_fit.py OUT --minutes 6 [--init synthetic.ckpt] [--data-yaml pfm1/data.yaml]

then, where the test flight is: ``python experiments/pfm1/gpu_fit.py OUT --join`` and the ``gpu`` stage of
run.py tests the checkpoint on the test flight and scores the test mosaic.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from common import REPO

PFM1 = REPO / "configs" / "pfm1.yaml"
GPU = REPO / "configs" / "trainer" / "gpu.yaml"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def slim(src: Path, dst: Path) -> None:
    """Copy a Lightning checkpoint without the optimiser and scheduler state."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=False)
    for key in ("optimizer_states", "lr_schedulers"):
        state.pop(key, None)
    tmp = dst.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)


def split(path: Path, part_mib: float) -> list[dict]:
    size = int(part_mib * 2**20)
    parts = []
    with path.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(size), b"")):
            part = path.with_name(f"{path.name}.part{i}")
            part.write_bytes(block)
            parts.append({"name": part.name, "bytes": len(block)})
    return parts


def join(out: Path) -> Path:
    """Reassemble best.ckpt from its parts and check it against the sha256 gpu_fit.json recorded."""
    record = out / "gpu_fit.json"
    if not record.is_file():
        raise SystemExit(f"{record}: no such file; run gpu_fit.py with --part-mib first")
    meta = json.loads(record.read_text())
    missing = [p["name"] for p in meta["checkpoint"].get("parts", []) if not (out / p["name"]).is_file()]
    if missing or not meta["checkpoint"].get("parts"):
        raise SystemExit(f"{out}: checkpoint parts missing: {missing or 'none recorded'}")
    ckpt = out / "best.ckpt"
    tmp = ckpt.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for part in meta["checkpoint"]["parts"]:
            f.write((out / part["name"]).read_bytes())
    if _sha256(tmp) != meta["checkpoint"]["sha256"]:
        tmp.unlink()
        raise SystemExit(f"{ckpt}: the joined parts do not match the recorded sha256")
    os.replace(tmp, ckpt)
    return ckpt


def _history(log_dir: Path) -> list[dict]:
    """Validation rows of the CSV log (epoch, step and the val/ metrics)."""
    files = sorted(log_dir.rglob("metrics.csv"))
    if not files:
        return []
    rows = []
    with files[-1].open() as f:
        for row in csv.DictReader(f):
            val = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if val:
                rows.append({"epoch": int(row["epoch"]), "step": int(row["step"]), **val})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--init",
        help="a checkpoint to start from (the recipe's ImageNet backbone without it; a synthetic checkpoint"
        " for the stages that start from one)",
    )
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget; the cosine anneals to it")
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--val-every", type=int, default=10, help="validate every N epochs (and the last)")
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--data-yaml", help="the export's data.yaml, where it is not at the recipe's path")
    parser.add_argument("--part-mib", type=float, default=0.0, help="also cut best.ckpt into parts of this size")
    parser.add_argument("--join", action="store_true", help="reassemble OUT/best.ckpt from its parts and stop")
    args, overrides = parser.parse_known_args(argv)
    if args.join:
        print(join(args.out))
        return 0
    os.chdir(REPO)
    args.out.mkdir(parents=True, exist_ok=True)
    import lightning
    import torch
    from ordnance.training.cli import main as train

    seconds = round(args.minutes * 60)
    budget = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    root = args.out / "runs"
    cli_args = [
        "fit",
        "--config",
        str(PFM1),
        "--config",
        str(GPU),
        "--model.init_checkpoint",
        args.init or "null",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_time",
        budget,
        "--trainer.max_epochs",
        str(args.max_epochs),
        "--trainer.check_val_every_n_epoch",
        str(args.val_every),
        "--model.anneal_by_time",
        "true",
        "--data.num_workers",
        str(args.workers),
        "--trainer.logger",
        json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}}),
        *(["--data.data_yaml", args.data_yaml] if args.data_yaml else []),
        *overrides,
    ]
    start = time.perf_counter()
    cli = train(cli_args)
    minutes = (time.perf_counter() - start) / 60
    trainer = cli.trainer
    best = Path(trainer.checkpoint_callback.best_model_path)
    ckpt = args.out / "best.ckpt"
    slim(best, ckpt)
    cuda = torch.cuda.is_available()
    meta = {
        "command": ["gpu_fit.py", *(argv if argv is not None else sys.argv[1:])],
        "trainer_args": cli_args,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "accelerator": type(trainer.accelerator).__name__,
        "precision": str(trainer.precision),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "train_minutes": minutes,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "batch_size": int(cli.datamodule.batch_size),
        "best": {"epoch_file": best.name, "score": float(trainer.checkpoint_callback.best_model_score or 0.0)},
        "validations": _history(root),
        "checkpoint": {"sha256": _sha256(ckpt), "bytes": ckpt.stat().st_size},
    }
    if args.part_mib:
        meta["checkpoint"]["parts"] = split(ckpt, args.part_mib)
    tmp = args.out / "gpu_fit.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, args.out / "gpu_fit.json")
    print(json.dumps({k: meta[k] for k in ("device", "precision", "train_minutes", "epochs", "steps", "best")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
