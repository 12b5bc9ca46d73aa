"""An ensemble of trained runs as one checkpoint: each run's CenterNet kept whole, their maps averaged cell by cell in
one network (``models.centernet.MapEnsemble``), validated, tested and exported like any single model.

Unlike a soup (training/soup.py), which averages weights and runs at the cost of one model, an ensemble runs every
member on every tile and averages what they say; it needs no common starting point (members may be other seeds,
recipes or backbones of one class list, tile size, GSD and output stride), and it costs the members' summed
compute per tile. Its operating threshold is its own: the members' thresholds were chosen on their own maps, so
the ensemble's is validated on the recipe's validation split before the file appears.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from ordnance.training.soup import _load, save, training_images, validate_operating_point

log = logging.getLogger(__name__)

# Hyperparameters the members must share for their maps to describe the same cells of the same imagery.
_SAME = ("class_names", "tile_size_px", "gsd_m", "input_scale")
_OPERATING = ("operating_threshold", "operating_validated")


def assemble(paths: list[Path]) -> dict:
    """One checkpoint of ``model: ensemble`` holding every member's detector weights (integer buffers included).

    Raises:
        ValueError: fewer than two checkpoints, one that is not a checkpoint, is already an ensemble, is not a
            CenterNet, or disagrees with the first on classes, tile size, GSD or input scale (named with its
            path).
    """
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs at least two checkpoints, got {len(paths)}")
    checkpoints = [_load(p) for p in paths]
    first_hp = checkpoints[0]["hyper_parameters"]
    names = []
    for path, checkpoint in zip(paths, checkpoints):
        hp = checkpoint["hyper_parameters"]
        if hp.get("members"):
            raise ValueError(f"{path}: already an ensemble; list its members' checkpoints instead")
        if not str(hp.get("model", "")).startswith("centernet"):
            raise ValueError(f"{path}: {hp.get('model')!r} is not a CenterNet detector; only CenterNets are averaged")
        differ = {k: (first_hp.get(k), hp.get(k)) for k in _SAME if first_hp.get(k) != hp.get(k)}
        if differ:
            raise ValueError(f"{path}: does not describe the same imagery as {paths[0]} ({differ})")
        names.append(hp["model"])
    state = {}
    for i, checkpoint in enumerate(checkpoints):
        for key, tensor in checkpoint["state_dict"].items():
            if key.startswith("detector.net."):
                state[f"detector.net.members.{i}." + key.removeprefix("detector.net.")] = tensor.clone()
    state["operating_threshold"] = torch.tensor(0.3)
    state["operating_validated"] = torch.tensor(-1.0)  # unknown until validate_operating_point
    hparams = dict(first_hp)
    hparams.update(model="ensemble", members=names, init_checkpoint=None, test_flips=1)
    members = []
    for path, checkpoint in zip(paths, checkpoints):
        lineage = checkpoint.get("ordnance_lineage") or {}
        members.append({"checkpoint": str(path), "model": checkpoint["hyper_parameters"]["model"],
                        "epoch": checkpoint.get("epoch"), "parent": lineage.get("parent", {}),
                        "training": lineage.get("training", {})})  # fmt: skip
    return {
        "state_dict": state,
        "hyper_parameters": hparams,
        "hparams_name": checkpoints[0].get("hparams_name", "kwargs"),
        "pytorch-lightning_version": checkpoints[0]["pytorch-lightning_version"],
        "epoch": 0,
        "global_step": 0,
        "ordnance_lineage": {"ensemble": members},
        # every member's training images: the ensemble is refused a validation split any member trained on
        "ordnance_training_images": training_images(checkpoints),
    }


def make(checkpoints: list[Path], output: Path, config: Path, extra: list[str] = ()) -> dict:
    """Assemble ``checkpoints`` into ``output`` and validate the ensemble's operating point on ``config``'s
    validation split in float32 (as the exported file runs). The file appears only when it is complete and
    validated."""
    output = Path(output)
    work = output.with_name(f".{output.name}.ensemble")
    save(assemble(list(checkpoints)), work)
    try:
        threshold, reached, metrics = validate_operating_point(work, config, ["--trainer.precision", "32-true", *extra])
        work.replace(output)
    finally:
        work.unlink(missing_ok=True)
    return {
        "checkpoint": str(output),
        "members": [str(p) for p in checkpoints],
        "operating_threshold": threshold,
        "precision_target_met": reached,
        "validation": metrics,
    }


def _ensemble_command():
    import json

    import click

    @click.command("ensemble")
    @click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The .ckpt to write.")
    @click.option(
        "--config",
        required=True,
        type=click.Path(path_type=Path),
        help="A recipe (LightningCLI YAML) of the members' imagery: its validation split chooses the ensemble's"
        " operating point.",
    )
    def ensemble(checkpoints, output, config) -> None:
        """Join trained CenterNet runs (CHECKPOINTS) into one model that averages their maps, validated on the
        recipe's validation split; export it like any checkpoint (every member runs on every tile)."""
        if not config.is_file():
            raise click.ClickException(f"{config}: recipe does not exist")
        try:
            summary = make(list(checkpoints), output, config)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(json.dumps(summary, indent=1))

    return ensemble


ensemble_command = _ensemble_command()
