"""Weight averaging across runs ("model soup", Wortsman et al., 2022): runs fine-tuned from one checkpoint, with
other seeds or recipes, averaged parameter by parameter into one set of weights. The soup runs at the cost of one
model, unlike an ensemble of the runs.

Only runs that started from the same weights are averaged (each checkpoint's lineage names its parent's sha256):
runs from different starting points need not lie in one basin, and their average can be worse than any of them.
BatchNorm statistics are averaged with the weights; ``recalibrate_batchnorm`` re-estimates them on training
batches for the averaged weights. The soup's operating threshold is unknown until it is validated
(``validate_operating_point``): an average of the runs' thresholds is the threshold of no model.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Hyperparameters that must agree for the weights to mean the same thing.
_SAME = ("model", "class_names", "tile_size_px", "gsd_m", "input_scale")
_OPERATING = ("operating_threshold", "operating_validated")


def _load(path: Path) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"{path}: checkpoint does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path}: not a Lightning checkpoint of an ordnance detector")
    return checkpoint


def _parent(checkpoint: dict) -> str | None:
    return (checkpoint.get("ordnance_lineage") or {}).get("parent", {}).get("weights_sha256")


def training_images(checkpoints: list[dict]) -> list[str]:
    """The union of the checkpoints' training-image keys (``ordnance_training_images``): a model joined from runs
    has seen what any of them saw."""
    return sorted({k for c in checkpoints for k in c.get("ordnance_training_images", [])})


def average_checkpoints(paths: list[Path]) -> dict:
    """One checkpoint whose floating-point tensors are the mean of ``paths``' (integer counters from the first).

    Raises:
        ValueError: fewer than two checkpoints, or one that is not a checkpoint, another detector, or fine-tuned
            from other weights than the first (named with its path).
    """
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two checkpoints, got {len(paths)}")
    checkpoints = [_load(p) for p in paths]
    first, first_hp = checkpoints[0], checkpoints[0]["hyper_parameters"]
    parent = _parent(first)
    if parent is None:
        raise ValueError(f"{paths[0]}: its lineage names no parent checkpoint; only fine-tuned runs are averaged")
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        hp = checkpoint["hyper_parameters"]
        differ = {k: (first_hp.get(k), hp.get(k)) for k in _SAME if first_hp.get(k) != hp.get(k)}
        if differ:
            raise ValueError(f"{path}: another detector than {paths[0]} ({differ})")
        if _parent(checkpoint) != parent:
            raise ValueError(f"{path}: fine-tuned from other weights than {paths[0]} (parent {_parent(checkpoint)})")
        if checkpoint["state_dict"].keys() != first["state_dict"].keys():
            raise ValueError(f"{path}: its tensors do not match {paths[0]}'s")
    state = {}
    for name, tensor in first["state_dict"].items():
        if name in _OPERATING:
            continue
        if tensor.is_floating_point():
            state[name] = torch.stack([c["state_dict"][name].float() for c in checkpoints]).mean(0).to(tensor.dtype)
        else:
            state[name] = tensor.clone()
    state["operating_threshold"] = torch.tensor(0.3)
    state["operating_validated"] = torch.tensor(-1.0)  # unknown until validate_operating_point
    lineage = dict(first.get("ordnance_lineage") or {})
    lineage["soup"] = [{"checkpoint": str(p), "epoch": c.get("epoch")} for p, c in zip(paths, checkpoints)]
    return {
        "state_dict": state,
        "hyper_parameters": dict(first_hp),
        "hparams_name": first.get("hparams_name", "kwargs"),
        "pytorch-lightning_version": first["pytorch-lightning_version"],
        "epoch": 0,
        "global_step": 0,
        "ordnance_lineage": lineage,
        "ordnance_training_images": training_images(checkpoints),
    }


def save(checkpoint: dict, path: Path) -> Path:
    """Write atomically (a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path


def _cli(config: Path, checkpoint: Path, extra: list[str]):
    from ordnance.training.cli import main

    args = ["--config", str(config), "--model.init_checkpoint", "null", "--trainer.logger", "false", *extra]
    cli = main(args, run=False)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    cli.model.load_state_dict(state)
    return cli


def update_batchnorm(task, batches) -> None:
    """Reset every BatchNorm layer of ``task``'s detector and estimate its running statistics as an equal-weight
    average over ``batches`` (uint8 or float [0, 1] image tensors)."""
    from torch.optim.swa_utils import update_bn

    with torch.no_grad():
        update_bn((task._images(images) for images in batches), task.detector.net)


def recalibrate_batchnorm(checkpoint: Path, config: Path, batches: int = 100, extra: list[str] = ()) -> dict:
    """Re-estimate every BatchNorm layer's running statistics for these weights over ``batches`` training batches
    of ``config``'s loader (its augmentation and pastes included); returns the checkpoint with them (the weights
    themselves unchanged)."""
    cli = _cli(config, checkpoint, list(extra))
    task, data = cli.model, cli.datamodule
    data.setup("fit")
    update_batchnorm(task, (batch[0] for batch in itertools.islice(data.train_dataloader(), batches)))
    out = torch.load(checkpoint, map_location="cpu", weights_only=False)
    bn = {k: v for k, v in task.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    out["state_dict"].update({k: v.detach().clone() for k, v in bn.items()})
    out["ordnance_lineage"]["batchnorm_recalibrated"] = {"config": str(config), "batches": batches}
    return out


def validate_operating_point(checkpoint: Path, config: Path, extra: list[str] = ()) -> tuple[float, bool, dict]:
    """Validate ``checkpoint`` on ``config``'s validation split, write the operating point chosen there into it,
    and return (threshold, whether it reached the recipe's precision target, the validation metrics).

    The views validation averaged (``model.test_flips`` of the config or ``extra``) are written into the
    checkpoint's hyper-parameters with the threshold: an export runs the checkpoint's own count by default, and
    must run the maps the threshold was chosen on."""
    from ordnance.training.cli import main

    cli = main(
        ["validate", "--config", str(config), "--ckpt_path", str(checkpoint), "--trainer.logger", "false",
         "--model.init_checkpoint", "null", *extra]
    )  # fmt: skip
    task = cli.model
    threshold, validated = float(task.operating_threshold), float(task.operating_validated)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    out = torch.load(checkpoint, map_location="cpu", weights_only=False)
    out["state_dict"]["operating_threshold"] = torch.tensor(threshold)
    out["state_dict"]["operating_validated"] = torch.tensor(validated)
    out["hyper_parameters"]["test_flips"] = int(task.hparams.get("test_flips", 1))
    save(out, checkpoint)
    log.info("%s: operating threshold %.4f validated on %s with %d view(s) (precision target met: %s)", checkpoint,
             threshold, config, out["hyper_parameters"]["test_flips"], validated == 1.0)  # fmt: skip
    return threshold, validated == 1.0, metrics


def make(checkpoints: list[Path], output: Path, config: Path, bn_batches: int = 0, extra: list[str] = ()) -> dict:
    """Average ``checkpoints`` into ``output``, optionally re-estimate BatchNorm statistics on ``bn_batches`` of
    the recipe's training batches, and validate the soup's operating point on the recipe's validation split.
    The file appears only when it is complete and validated."""
    output = Path(output)
    work = output.with_name(f".{output.name}.soup")
    save(average_checkpoints(list(checkpoints)), work)
    try:
        if bn_batches:
            save(recalibrate_batchnorm(work, config, bn_batches, extra), work)
        # in float32, as the exported file runs
        threshold, reached, metrics = validate_operating_point(work, config, ["--trainer.precision", "32-true", *extra])
        work.replace(output)
    finally:
        work.unlink(missing_ok=True)
    return {
        "checkpoint": str(output),
        "members": [str(p) for p in checkpoints],
        "bn_batches": bn_batches,
        "operating_threshold": threshold,
        "precision_target_met": reached,
        "validation": metrics,
    }


def _soup_command():
    import json

    import click

    @click.command("soup")
    @click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The .ckpt to write.")
    @click.option(
        "--config",
        required=True,
        type=click.Path(path_type=Path),
        help="The recipe (LightningCLI YAML) the runs were trained with: its validation split chooses the soup's"
        " operating point, its training batches re-estimate BatchNorm statistics.",
    )
    @click.option(
        "--bn-batches",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Training batches to re-estimate BatchNorm statistics on (0: the runs' statistics averaged).",
    )
    def soup(checkpoints, output, config, bn_batches) -> None:
        """Average the weights of CHECKPOINTS (runs fine-tuned from one checkpoint) into one checkpoint, validated
        on the recipe's validation split; export it like any checkpoint."""
        if not config.is_file():
            raise click.ClickException(f"{config}: recipe does not exist")
        try:
            summary = make(list(checkpoints), output, config, bn_batches)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(json.dumps(summary, indent=1))

    return soup


soup_command = _soup_command()
