"""The PFM-1 ablation: train, test on the test flight once, export, score the test mosaic, evaluate.

Each stage writes its figures into results.json beside this script (a stage already there is skipped, so the
experiment resumes after a stop). Stages:

| stage | what |
| --- | --- |
| zero_shot | the synthetic recipe's checkpoint, never trained on a real pixel, at its own 1 cm GSD |
| real_only | configs/pfm1.yaml from random init (the recipe before it pasted look-alikes) |
| synth_real | configs/pfm1.yaml from the synthetic checkpoint, on the earlier 16-epoch schedule (native 2.94 mm) |
| synth_real_long | configs/pfm1.yaml from the synthetic checkpoint (the recipe: up to 44 epochs in 58 minutes) |
| synth_real_recipe | the same recipe after its pipeline changes (augmentation on the crop, last epoch validated) |
| synth_real_f03 | the recipe with half of each epoch from Phan4_200316_F03, the test flight's day and ground |
| synth_real_5mm | the same at a 5 mm working GSD |
| synth_real_1cm | the same at a 1 cm working GSD |
| photo_synth | configs/pfm1_photosynth.yaml: drawn items on real training-flight grass, from the synthetic checkpoint |
| photo_synth_real | configs/pfm1.yaml from the photo_synth checkpoint |
| synth_real_lookalikes | drawn look-alikes pasted unlabelled (copy_paste.lookalike_items 3): the recipe since |
| photo_synth_real_lookalikes | the same from the photo_synth checkpoint |
| synth_real_shade_hide | synth_real_lookalikes with pasted items partly shaded or hidden (copy_paste.shade, hide 0.3) |
| synth_real_oak | synth_real_lookalikes with pale dead oak and maple leaves among the pasted look-alikes |
| synth_real_lookalikes_rerun | synth_real_lookalikes again, from synth_real_oak's synthetic checkpoint, faster loader |
| synth_real_lookalikes_seed1 | synth_real_lookalikes_rerun with seed_everything 1: the spread between runs |
| synth_real_oak_rerun | synth_real_oak again beside synth_real_lookalikes_rerun: the same checkpoint and loader |
| synth_real_f03_gpu | synth_real_f03 with the GPU preset (configs/trainer/gpu.yaml), trained by gpu_fit.py |
| soup_lookalikes | the weights of synth_real_lookalikes_rerun and _seed1 averaged (training/soup.py), validated |
| soup_lookalikes_bn | the same with BatchNorm statistics re-estimated on 100 training batches of the recipe |
| soup_f4dd80e0 | every finished run from the synthetic checkpoint f4dd80e0 averaged: both seeds and both oak runs |
| fast_real | the recipe with the fast detector (centernet_resnet10_lite), from its own synthetic checkpoint |
| fast_pair_seed0, fast_pair_seed1 | fast_real in half its time budget (29 minutes), seeds 0 and 1 |
| fast_pair_seed2 | the same half budget, seed 2 |
| fast_pair_shade_seed0 | fast_pair_seed0 with pasted items partly shaded or hidden (copy_paste.shade, hide 0.3) |
| fast_pair_seed0_rerun | fast_pair_seed0 again, from the shade stage's synthetic checkpoint: its baseline |
| fast_pair_ensemble | the two runs' maps averaged in one graph (training/ensemble.py), validated as one model |
| fast_real_threads | fast_real again, fresh synthetic checkpoint, one training thread per core the loader leaves |
| imagenet_real | the recipe on centernet_efficientnet_lite0 from ImageNet weights, no synthetic checkpoint |
| imagenet_real_threads | imagenet_real on torch's own two intra-op threads (training_threads 0): the recipe since |
| imagenet_lite1_real | imagenet_real_threads on centernet_efficientnet_lite1 (EfficientNet-Lite1 from ImageNet) |
| imagenet_seams | imagenet_real_threads with seams: quadrants of ground from other empty training tiles (p 0.5) |
| imagenet_real_threads_seed1, imagenet_seams_seed1 | the two above with seed_everything 1: the spread between runs |
| imagenet_flips2 | imagenet_real_threads validated, tested and exported on two views (the tile and its flip) |
| imagenet_flips2_seed1, imagenet_seams_flips2 | imagenet_flips2 with seed_everything 1; with seams |
| imagenet_seams_flips2_seed1 | imagenet_seams_flips2 (configs/pfm1.yaml since) with seed_everything 1 |
| imagenet_ensemble3 | imagenet_flips2, imagenet_seams_seed1 and imagenet_seams_flips2 as one ensemble, two views |
| imagenet_photo_synth | photo_synth (drawn items on real grass, no real item pixel) on that detector from ImageNet |
| fast_real_2x | fast_real at twice the tiles' resolution (1.47 mm per pixel, tiles enlarged), on 384 px crops |

    .venv/bin/python experiments/pfm1/run.py --synthetic-ckpt runs/1/<run>/checkpoints/best-*.ckpt STAGE...

Stages of another detector start from that detector's synthetic checkpoint (``--fast-synthetic-ckpt``: the best
checkpoint of configs/synthetic.yaml).

For each: training minutes (wall clock of ``ordnance train fit`` on this machine), test-flight metrics from
``ordnance train test`` in float32 (PFM-1 AP50 is ``test/ap50_ap_mine``), then the best checkpoint exported
through the parity gate and the test mosaic (mosaic.py) scored with ``ordnance score`` and evaluated with
``ordnance evaluate``: recall at 10 false alarms per hectare, AP, false alarms per hectare at the card's
operating point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import report
from common import HERE, REPO, load_results, save_results

BIN = Path(sys.executable).absolute().parent
RESULTS = HERE / "results.json"
PFM1 = REPO / "configs" / "pfm1.yaml"
PHOTO = REPO / "configs" / "pfm1_photosynth.yaml"
CURVE_THRESHOLD = 0.02  # candidates kept for the recall / false-alarm curve
FLOOR_M = 0.05  # a hit is within half the item's size, at least 5 cm (a PFM-1 is 12 cm long)
# The recipe works at the tiles' native 2.94 mm on 768 px tiles (each tile whole); the coarser working GSDs of the
# comparison take 512 px tiles, which hold a whole tile there too.
GSD = {
    "5mm": ["--model.gsd_m", "0.005", "--data.gsd_m", "0.005", "--model.tile_size_px", "512",
            "--data.tile_size_px", "512"],
    "1cm": ["--model.gsd_m", "0.01", "--data.gsd_m", "0.01", "--model.tile_size_px", "512",
            "--data.tile_size_px", "512"],
    # Finer than the tiles: each tile enlarged twice (bilinear, in training and in the scorer), 1536 px tiles, and
    # 384 px training crops (56 cm of ground, against 75 cm at 2.94 mm: a PFM-1 is 12 cm long).
    "1.47mm": ["--model.gsd_m", "0.00147", "--data.gsd_m", "0.00147", "--model.tile_size_px", "1536",
               "--data.tile_size_px", "1536", "--data.crop_px", "384"],
}  # fmt: skip
LONG = ["--trainer.max_epochs", "44", "--trainer.max_time", "00:00:58:00", "--model.anneal_by_time", "true"]
VAL_EVERY_4 = ["--trainer.check_val_every_n_epoch", "4"]  # the recipe's interval before it validated the last epoch
F03_HALF = ["--data.group_weights", '{"Phan4_200316_F03": 3}']  # 3 of 6 shares: the other three flights 1 each
GPU_RUN = HERE / "data" / "gpu"  # gpu_fit.py's output folder: gpu_fit.json and best.ckpt (or its parts)
LOOKALIKES = ["--data.copy_paste.lookalike_items", "3"]  # drawn dead leaves, stones, ... pasted unlabelled
NO_LOOKALIKES = ["--data.copy_paste.lookalike_items", "0"]  # the recipe before it pasted look-alikes
# Two of every seven pasted look-alikes pale dead oak or maple leaves (pointed lobes, sun-bleached), the test flight's
# top false alarms under the recipe with the oval leaf only.
OAK = ["--data.copy_paste.lookalike_names", '["oak_leaf", "oak_leaf", "leaf", "stone", "branch", "can", "bottle"]']
# Pasted items partly in vegetation's shadow or half hidden in the grass: how the recipe's lowest-scored test items lie.
SHADE_HIDE = ["--data.copy_paste.shade", "0.3", "--data.copy_paste.hide", "0.3"]
HALF = ["--trainer.max_time", "00:00:29:00"]  # half the recipe's 58 minutes (the cosine decay follows the clock)
# Saturation factors down to 0.2 in the colour jitter: the Phantom 4 flights of 2020 (F03 and the test flight) render
# items and ground nearly grey (mean chroma of the PFM-1 boxes about 9, against 20 to 30 on the other flights).
GREY = ["--data.augment.saturation", "[0.2, 1.25]"]
SEED1 = ["--seed_everything", "1"]  # crops, pastes and their order drawn anew: how far one run is from the next
SEED2 = ["--seed_everything", "2"]
SEEDS = ("synth_real_lookalikes_rerun", "synth_real_lookalikes_seed1")  # one recipe, two seeds
UNIFORM = ["--data.group_weights", "null"]  # every training image once per epoch, as the recipe was before F03_HALF
# The fast detector (the recipe's until stage imagenet_real): about three times the default's steps per minute, so
# the same 58-minute budget may run up to three times the epochs (the cosine decay still follows the clock);
# validated every 12 epochs instead of 8.
# configs/pfm1.yaml trains on torch's own intra-op threads (training_threads 0, since stage imagenet_real_threads);
# the stages before it ran with TrainingThreads' rule, one thread per core the two loader workers leave.
RULE_THREADS = ["--training_threads", "null"]
SEAMS = ["--data.seams", "0.5"]  # half the training images take ground from other empty training tiles
# Views validated, tested and exported (model.test_flips). configs/pfm1.yaml runs two since stage imagenet_flips2;
# a stage of configs/pfm1.yaml that names no view count ran before that, on one, and keeps it (run_stage).
ONE_VIEW = ["--model.test_flips", "1"]
TWO_VIEWS = ["--model.test_flips", "2"]
# configs/pfm1.yaml trains with seams (data.seams 0.5) since stage imagenet_seams_flips2; a stage of it that names no
# seams ran before that, without them, and keeps that (run_stage).
NO_SEAMS = ["--data.seams", "0"]
FAST = ["--model.model", "centernet_resnet10_lite", "--model.weights", "null", "--trainer.max_epochs", "132",
        "--trainer.check_val_every_n_epoch", "12", *RULE_THREADS]  # fmt: skip
# EfficientNet-Lite0 from its ImageNet weights (models/efficientnet_lite.py): about a third of the fast detector's
# steps per second on this CPU, so the 58-minute clock, not the epoch cap, ends the run.
IMAGENET = ["--model.model", "centernet_efficientnet_lite0", "--model.weights", "IMAGENET1K",
            "--trainer.max_epochs", "132", "--trainer.check_val_every_n_epoch", "12"]  # fmt: skip
# EfficientNet-Lite1 in Lite0's place: a block more in each middle stage.
LITE1 = ["--model.model", "centernet_efficientnet_lite1", *IMAGENET[2:]]
# configs/pfm1_photosynth.yaml's 14 minutes doubled for the slower detector, its cosine on the clock.
IMAGENET_PHOTO = [*IMAGENET[:4], "--trainer.max_epochs", "24", "--trainer.max_time", "00:00:28:00",
                  "--model.anneal_by_time", "true"]  # fmt: skip
# configs/pfm1.yaml trains centernet_efficientnet_lite0 from ImageNet (stage imagenet_real); the fast stages set the
# detector they ran with back, without pretrained weights, and the stages on centernet_resnet18 (every stage but the
# fast and ImageNet ones) set it back with the schedule it had then: up to 44 epochs, validated every 8.
R18 = ["--model.model", "centernet_resnet18", "--model.weights", "null", "--trainer.max_epochs", "44",
       "--trainer.check_val_every_n_epoch", "8", *RULE_THREADS]  # fmt: skip
SHORT = [
    "--trainer.max_epochs",
    "16",
    "--trainer.max_time",
    "00:00:24:00",
    "--model.anneal_by_time",
    "false",
    *VAL_EVERY_4,
]


def stages(synthetic: str, fast_synthetic: str | None = None) -> dict[str, dict]:
    """Stage name -> recipe, overrides, checkpoint to start from (None: random init) or to test as is."""
    photo_ckpt = "@photo_synth"
    return {
        # the recipe with another detector, from that detector's own synthetic checkpoint
        "fast_real": {"config": PFM1, "init": fast_synthetic, "args": [*FAST, *LOOKALIKES], "needs": "fast"},
        # Two runs of that recipe in half its budget each (seeds 0 and 1, 29 minutes each: one run's training time
        # for the pair), and their ensemble: one graph that averages the two networks' maps (training/ensemble.py),
        # validated on the valid flight as one model. It costs two networks per tile.
        "fast_pair_seed0": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF],
            "needs": "fast",
        },
        "fast_pair_seed1": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF, *SEED1],
            "needs": "fast",
        },
        # A third seed of the half budget: the spread of one recipe, and the checkpoint per_flight.py reads to tell a
        # model that has not fitted its training flights from one that has and still misses the test flight.
        "fast_pair_seed2": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF, *SEED2],
            "needs": "fast",
        },
        # The half budget, seed 0, with pasted items (real and drawn) partly in shadow or half hidden in the grass
        # (SHADE_HIDE): how the lowest-scored items of the test flight lie.
        "fast_pair_shade_seed0": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF, *SHADE_HIDE],
            "needs": "fast",
        },
        # fast_pair_seed0 again, run from the same synthetic checkpoint as fast_pair_shade_seed0: its baseline.
        "fast_pair_seed0_rerun": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF],
            "needs": "fast",
        },
        # The same pair with the colour jitter reaching down to nearly grey (GREY), seed for seed.
        "fast_pair_grey_seed0": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF, *GREY],
            "needs": "fast",
        },
        "fast_pair_grey_seed1": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *HALF, *GREY, *SEED1],
            "needs": "fast",
        },
        "fast_pair_ensemble": {
            "config": PFM1,
            "ensemble": ["fast_pair_seed0", "fast_pair_seed1"],
            "side_by_side": True,
        },
        # fast_real again with the training process on one intra-op thread per core left by the loader workers
        # (training/callbacks.py TrainingThreads, fit_speed.py): the recipe's steps within its budget on this CPU.
        "fast_real_threads": {"config": PFM1, "init": fast_synthetic, "args": [*FAST, *LOOKALIKES], "needs": "fast"},
        # A backbone that has seen photographs (ImageNet) in place of the synthetic scenes: the recipe from random
        # heads on EfficientNet-Lite0's ImageNet weights, never trained on a synthetic scene.
        "imagenet_real": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *RULE_THREADS]},
        # The same recipe on torch's own two intra-op threads (training_threads 0): the ImageNet detector trained
        # more steps per second that way (fit_speed_effnet.json); the recipe since.
        "imagenet_real_threads": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES]},
        # Zero-shot on that backbone: ImageNet's photographs, then drawn items on real grass, never a real item.
        # The recipe on EfficientNet-Lite1 from its ImageNet weights: a deeper backbone in the same 58 minutes.
        "imagenet_lite1_real": {"config": PFM1, "init": None, "args": [*LITE1, *LOOKALIKES]},
        # The recipe with seams: half the training images get one to three quadrants of ground from other empty
        # training tiles (data.seams, datasets/composite.py stitch). The highest false alarms of
        # imagenet_real_threads on the test mosaic lie on the seams where its tiles meet (false_alarms.py).
        "imagenet_seams": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *SEAMS]},
        # Each of the two again with seed_everything 1: how far one run lies from the next.
        "imagenet_real_threads_seed1": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *SEED1]},
        "imagenet_seams_seed1": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *SEAMS, *SEED1]},
        # The recipe validating, testing and exporting the maps of the tile and its left-right flip averaged: the
        # operating point is chosen on the two views the exported file runs (twice the model time per tile).
        "imagenet_flips2": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *TWO_VIEWS]},
        # The two-view recipe with seed_everything 1, and with seams: its spread, and the seams on top of it.
        "imagenet_flips2_seed1": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *TWO_VIEWS, *SEED1]},
        "imagenet_seams_flips2": {"config": PFM1, "init": None, "args": [*IMAGENET, *LOOKALIKES, *TWO_VIEWS, *SEAMS]},
        # configs/pfm1.yaml as it stands since (seams, two views) with seed_everything 1: the recipe's spread.
        "imagenet_seams_flips2_seed1": {
            "config": PFM1,
            "init": None,
            "args": [*IMAGENET, *LOOKALIKES, *TWO_VIEWS, *SEAMS, *SEED1],
        },
        # Three ImageNet runs of two seeds, with and without seams, as one model that averages their maps
        # (training/ensemble.py), each on two views: validated, tested and exported on those views. Six network
        # passes per tile: for the desk, where recall is bought with compute, not for the tablet.
        "imagenet_ensemble3": {
            "config": PFM1,
            "ensemble": ["imagenet_flips2", "imagenet_seams_seed1", "imagenet_seams_flips2"],
            "args": TWO_VIEWS,
        },
        # The recipe as it stands (seams, two views), its two seeds as one ensemble: four network passes per tile.
        "imagenet_seams_ensemble2": {
            "config": PFM1,
            "ensemble": ["imagenet_seams_flips2", "imagenet_seams_flips2_seed1"],
            "args": TWO_VIEWS,
        },
        # imagenet_ensemble3 and the recipe's seed 1: four runs, eight network passes per tile.
        "imagenet_ensemble4": {
            "config": PFM1,
            "ensemble": [
                "imagenet_flips2",
                "imagenet_seams_seed1",
                "imagenet_seams_flips2",
                "imagenet_seams_flips2_seed1",
            ],
            "args": TWO_VIEWS,
        },
        "imagenet_photo_synth": {"config": PHOTO, "init": None, "args": IMAGENET_PHOTO},
        # The working GSD's trend (10 mm, 5 mm, 2.94 mm: each finer one better on the test flight) carried past the
        # tiles' own: the stride-4 patchify stem sees a 2.94 mm PFM-1 as about 10 x 6 cells, its lobes as one or two.
        "fast_real_2x": {
            "config": PFM1,
            "init": fast_synthetic,
            "args": [*FAST, *LOOKALIKES, *GSD["1.47mm"]],
            "needs": "fast",
        },
        "zero_shot": {"config": PFM1, "test_only": synthetic, "args": R18 + GSD["1cm"]},
        "real_only": {"config": PFM1, "init": None, "args": R18 + NO_LOOKALIKES},
        "synth_real": {"config": PFM1, "init": synthetic, "args": R18 + SHORT + UNIFORM + NO_LOOKALIKES},
        "synth_real_long": {
            "config": PFM1,
            "init": synthetic,
            "args": [*R18, *LONG, *VAL_EVERY_4, *UNIFORM, *NO_LOOKALIKES],
        },
        "synth_real_recipe": {"config": PFM1, "init": synthetic, "args": R18 + LONG + UNIFORM + NO_LOOKALIKES},
        # Half of each epoch from the training flight of the test flight's day and ground (grass and oak leaves).
        "synth_real_f03": {"config": PFM1, "init": synthetic, "args": [*R18, *LONG, *F03_HALF, *NO_LOOKALIKES]},
        "synth_real_5mm": {
            "config": PFM1,
            "init": synthetic,
            "args": R18 + SHORT + GSD["5mm"] + UNIFORM + NO_LOOKALIKES,
        },
        "synth_real_1cm": {
            "config": PFM1,
            "init": synthetic,
            "args": R18 + SHORT + GSD["1cm"] + UNIFORM + NO_LOOKALIKES,
        },
        "photo_synth": {"config": PHOTO, "init": synthetic, "args": R18},
        "photo_synth_real": {"config": PFM1, "init": photo_ckpt, "args": R18 + NO_LOOKALIKES},
        "synth_real_lookalikes": {"config": PFM1, "init": synthetic, "args": R18 + LOOKALIKES},  # the recipe since
        "photo_synth_real_lookalikes": {"config": PFM1, "init": photo_ckpt, "args": R18 + LOOKALIKES},
        "synth_real_shade_hide": {"config": PFM1, "init": synthetic, "args": [*R18, *LOOKALIKES, *SHADE_HIDE]},
        "synth_real_oak": {"config": PFM1, "init": synthetic, "args": [*R18, *LOOKALIKES, *OAK]},
        "synth_real_lookalikes_rerun": {"config": PFM1, "init": synthetic, "args": R18 + LOOKALIKES},
        "synth_real_lookalikes_seed1": {"config": PFM1, "init": synthetic, "args": [*R18, *LOOKALIKES, *SEED1]},
        "synth_real_oak_rerun": {"config": PFM1, "init": synthetic, "args": [*R18, *LOOKALIKES, *OAK]},
        # Weight averages of finished stages' best checkpoints, all fine-tuned from one synthetic checkpoint
        "soup_lookalikes": {"config": PFM1, "soup": [*SEEDS], "args": R18},
        "soup_lookalikes_bn": {"config": PFM1, "soup": [*SEEDS], "bn_batches": 100, "args": R18},
        "soup_f4dd80e0": {"config": PFM1, "soup": [*SEEDS, "synth_real_oak", "synth_real_oak_rerun"], "args": R18},
        # Trained on a GPU by gpu_fit.py (its JSON names the device, the time and the steps); tested and scored here.
        "synth_real_f03_gpu": {"config": PFM1, "init": synthetic, "trained": GPU_RUN, "args": R18},
    }


def _load() -> dict:
    return load_results(RESULTS)


def _save(results: dict) -> None:
    save_results(RESULTS, results, indent=1)


def fit(config: Path, init: str | None, args: list[str], root: Path) -> tuple[str, str, float, dict]:
    """Train; returns (best checkpoint, MLflow run id, minutes, {"epochs", "steps"} trained): epochs begun, the last
    possibly cut short by the time budget, and optimizer steps taken."""
    from ordnance.training.callbacks import cpu_training_threads
    from ordnance.training.cli import main

    start = time.perf_counter()
    cli = main(
        [
            "fit",
            "--config",
            str(config),
            "--model.init_checkpoint",
            str(init) if init else "null",
            "--trainer.default_root_dir",
            str(root),
            *args,
        ]
    )
    minutes = (time.perf_counter() - start) / 60
    best = cli.trainer.checkpoint_callback.best_model_path
    run_id = getattr(cli.trainer.logger, "run_id", "") or ""
    trained = {"epochs": cli.trainer.current_epoch, "steps": cli.trainer.global_step}
    threads = cpu_training_threads(cli.trainer)
    if threads is not None:
        trained["cpu_threads"] = threads
    return best, run_id, minutes, trained


def test(config: Path, ckpt: str, args: list[str]) -> dict:
    """Test-flight metrics in float32 at the checkpoint's validated operating point."""
    from ordnance.training.cli import main

    cli = main(
        [
            "test",
            "--config",
            str(config),
            "--ckpt_path",
            ckpt,
            "--trainer.logger",
            "false",
            "--trainer.precision",
            "32-true",
            *args,
        ]
    )
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


def make_soup(name: str, members: list[dict], bn_batches: int, args: list[str]) -> tuple[str, dict]:
    """Average the members' best checkpoints (training/soup.py), optionally re-estimate BatchNorm statistics on the
    recipe's training batches, and validate the soup's own operating point on the valid flight in float32."""
    from ordnance.training import soup

    paths = [Path(m["checkpoint"]) if Path(m["checkpoint"]).is_absolute() else REPO / m["checkpoint"] for m in members]
    ckpt = HERE / "data" / f"{name}.ckpt"
    start = time.perf_counter()
    made = soup.make(paths, ckpt, PFM1, bn_batches, args)
    threshold, reached, metrics = made["operating_threshold"], made["precision_target_met"], made["validation"]
    return str(ckpt), {
        "checkpoint": str(ckpt.relative_to(REPO)),
        # the members' training time: a soup of n runs costs n runs (side by side on n machines), then minutes
        "train_minutes": sum(m["train_minutes"] for m in members),
        "soup_minutes": (time.perf_counter() - start) / 60,
        **(
            {"trained": {k: sum(m["trained"][k] for m in members) for k in ("epochs", "steps")}}
            if all("trained" in m for m in members)
            else {}
        ),
        "valid_curve": [[0, metrics["val/ap50_ap_mine"]]],
        "validated": {"threshold": threshold, "precision_target_met": reached, "bn_batches": bn_batches},
    }


def make_ensemble(name: str, members: list[dict], views: list[str]) -> tuple[str, dict]:
    """Join the members' best checkpoints into one model that averages their maps (training/ensemble.py) and
    validate its own operating point on the valid flight in float32, on the stage's ``views``
    (``--model.test_flips N``)."""
    from ordnance.training import ensemble

    paths = [Path(m["checkpoint"]) if Path(m["checkpoint"]).is_absolute() else REPO / m["checkpoint"] for m in members]
    ckpt = HERE / "data" / f"{name}.ckpt"
    start = time.perf_counter()
    made = ensemble.make(paths, ckpt, PFM1, views)
    metrics = made["validation"]
    return str(ckpt), {
        "checkpoint": str(ckpt.relative_to(REPO)),
        "train_minutes": sum(m["train_minutes"] for m in members),  # the members trained one after another
        "ensemble_minutes": (time.perf_counter() - start) / 60,
        **(
            {"trained": {k: sum(m["trained"][k] for m in members) for k in ("epochs", "steps")}}
            if all("trained" in m for m in members)
            else {}
        ),
        "valid_curve": [[0, metrics["val/ap50_ap_mine"]]],
        "validated": {"threshold": made["operating_threshold"], "precision_target_met": made["precision_target_met"]},
    }


# int8 calibration options for `ordnance export` (main sets them from --calibration-method / --calibration-tiles)
CALIBRATION: list[str] = []


def mosaic_eval(name: str, ckpt: str, config: Path, int8: bool, test_flips: int = 1) -> dict:
    """Export through the parity gate (with ``test_flips`` views averaged in the graph), score the test mosaic
    with the exported file, evaluate."""
    os.chdir(REPO)  # recipes name their data relative to the repository root
    data = HERE / "data"
    onnx = data / f"{name}.onnx"
    export = [
        str(BIN / "ordnance"),
        "export",
        ckpt,
        "-o",
        str(onnx),
        "--parity-data",
        str(config),
        "--parity-tiles",
        "32",
        "--no-register",
    ]
    # int8 where its gate passes; a refusal is recorded and the float32 file is still scored
    export += ["--calibration", str(config), *CALIBRATION] if int8 else ["--no-int8"]
    onnx.with_suffix(".int8.onnx").unlink(missing_ok=True)  # an earlier export's file is not this one's
    if test_flips != 1:
        export += ["--test-flips", str(test_flips)]
    exported = subprocess.run(export, capture_output=True, text=True)
    if exported.returncode < 0:  # killed (the kernel's out-of-memory killer sends SIGKILL): no verdict of the gate
        return {"export_killed": f"ordnance export killed by signal {-exported.returncode}"}
    if exported.returncode != 0:  # the gate refused the file: nothing to score, and the results say why
        lines = (exported.stderr or exported.stdout).strip().splitlines()
        return {"export_refused": lines[-1] if lines else f"exit {exported.returncode}"}
    mosaic = data / "pfm1_test.tif"
    if not mosaic.exists():
        subprocess.run([sys.executable, str(HERE / "mosaic.py")], check=True)
    out = {"parity": json.loads(onnx.with_suffix(".parity.json").read_text())}
    files = {"fp32": onnx}
    if int8 and onnx.with_suffix(".int8.onnx").exists():
        files["int8"] = onnx.with_suffix(".int8.onnx")
    elif int8:
        out["int8_refused"] = out["parity"].get("int8", {}).get("refused", "not written")
    for kind, model in files.items():
        out[kind] = score_mosaic(model, mosaic, data / f"scored_{name}_{kind}")
    return out


def score_mosaic(model: Path, mosaic: Path, scored: Path) -> dict:
    """``ordnance score`` the mosaic with an exported file into ``scored``, then ``ordnance evaluate`` against the
    mosaic's point truth (``<mosaic>_truth.gpkg``), along the whole curve and at the card's threshold."""
    subprocess.run(
        [
            str(BIN / "ordnance"),
            "score",
            str(mosaic),
            "--model",
            str(model),
            "-o",
            str(scored),
            "--no-progress",
            "--no-resume",
            "--no-review",
            "--format",
            "gpkg",
            "--score-threshold",
            str(CURVE_THRESHOLD),
        ],
        check=True,
    )
    manifest = json.loads((scored / "manifest.json").read_text())
    card_threshold = json.loads(manifest["model"]["card"])["score_threshold"]
    truth = mosaic.with_name(mosaic.stem + "_truth.gpkg")
    reports = {}
    for label, threshold in (("curve", None), ("operating_point", card_threshold)):
        folder = scored / f"evaluation_{label}"
        command = [
            str(BIN / "ordnance"),
            "evaluate",
            str(scored / "candidates.gpkg"),
            str(truth),
            "-o",
            str(folder),
            "--floor-m",
            str(FLOOR_M),
        ]
        if threshold is not None:
            command += ["--score-threshold", str(threshold)]
        subprocess.run(command, check=True)
        report = json.loads((folder / "evaluation.json").read_text())
        reports[label] = {k: report[k] for k in ("overall", "per_class", "area_ha")}
    return {
        **reports,
        "card_threshold": card_threshold,
        "gsd_check": manifest["inputs"][0].get("gsd_check"),
        "area_scanned_ha": manifest["area_scanned_ha"],
        "tiles": manifest["tiles"],
        "timings": manifest["timings"],
    }


def run_stage(name: str, spec: dict, results: dict, root: Path, int8: bool) -> None:
    args = list(spec.get("args", []))
    if spec["config"] == PFM1 and ONE_VIEW[0] not in args:
        args += ONE_VIEW  # as the stage ran, before configs/pfm1.yaml took two views
    if spec["config"] == PFM1 and NO_SEAMS[0] not in args:
        args += NO_SEAMS  # as the stage ran, before configs/pfm1.yaml took seams (training only: no effect on tests)
    entry: dict = {"config": str(Path(spec["config"]).relative_to(REPO)), "overrides": args}
    if "test_only" in spec:
        ckpt = spec["test_only"]
        entry.update(init=ckpt, train_minutes=0.0)
    elif "trained" in spec:  # trained elsewhere by gpu_fit.py: its record says where and for how long
        folder = Path(spec["trained"])
        meta = json.loads((folder / "gpu_fit.json").read_text())
        ckpt = str(folder / "best.ckpt")
        if not Path(ckpt).exists():
            subprocess.run([sys.executable, str(HERE / "gpu_fit.py"), str(folder), "--join"], check=True)
        entry.update(
            init=spec["init"],
            checkpoint=str(Path(ckpt).relative_to(REPO)),
            train_minutes=meta["train_minutes"],
            train_device=meta["device"],
            train_record={k: meta[k] for k in ("precision", "torch", "lightning", "epochs", "steps", "batch_size")},
            overrides=meta["trainer_args"],
            valid_curve=[[v["step"], v["val/ap50_ap_mine"]] for v in meta["validations"] if "val/ap50_ap_mine" in v],
        )
    elif "ensemble" in spec:
        views = args[args.index(ONE_VIEW[0]) : args.index(ONE_VIEW[0]) + 2]
        ckpt, record = make_ensemble(name, [results[s] for s in spec["ensemble"]], views)
        entry.update(record, ensemble=list(spec["ensemble"]))
    elif "soup" in spec:
        ckpt, record = make_soup(name, [results[s] for s in spec["soup"]], spec.get("bn_batches", 0), args)
        entry.update(record, soup=list(spec["soup"]))
    else:
        init = spec.get("init")
        if isinstance(init, str) and init.startswith("@"):
            init = results[init[1:]]["checkpoint"]
        ckpt, run_id, minutes, trained = fit(Path(spec["config"]), init, args, root)
        entry.update(init=init, checkpoint=ckpt, mlflow_run=run_id, train_minutes=minutes, trained=trained)
        # kept with the results: the MLflow store (mlruns/) does not travel with a clone
        entry["valid_curve"] = [list(point) for point in report.valid_curve(run_id)]
    entry["test"] = test(PFM1, ckpt, args)
    entry["mosaic"] = mosaic_eval(name, ckpt, PFM1, int8)
    results[name] = entry
    _save({**_load(), name: entry})  # other stages as they are on disk now (another run may have written since)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+")
    parser.add_argument("--synthetic-ckpt", required=True, help="best checkpoint of configs/synthetic_resnet18.yaml")
    parser.add_argument("--fast-synthetic-ckpt", help="best checkpoint of configs/synthetic.yaml")
    parser.add_argument("--root", type=Path, default=REPO / "runs", help="training runs folder")
    parser.add_argument("--int8", action="store_true", help="also export and score the int8 file")
    parser.add_argument("--force", action="store_true", help="run stages already in results.json again")
    parser.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy"], help="int8 calibration")
    parser.add_argument("--calibration-tiles", type=int, help="training tiles that calibrate int8")
    parser.add_argument(
        "--reexport",
        action="store_true",
        help="export and score the checkpoints of finished stages again (no training)",
    )
    args = parser.parse_args(argv)
    CALIBRATION[:] = [
        *(["--calibration-method", args.calibration_method] if args.calibration_method else []),
        *(["--calibration-tiles", str(args.calibration_tiles)] if args.calibration_tiles is not None else []),
    ]
    os.chdir(REPO)  # recipes name their data relative to the repository root
    table = stages(args.synthetic_ckpt, args.fast_synthetic_ckpt)
    unknown = [s for s in args.stages if s not in table]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(table)}")
    missing = [s for s in args.stages if table[s].get("needs") == "fast" and not args.fast_synthetic_ckpt]
    if missing and not args.reexport:
        parser.error(f"stages {missing} start from the fast detector's synthetic checkpoint: --fast-synthetic-ckpt")
    results = _load()
    if args.reexport:
        for name in args.stages:
            entry = results[name]
            ckpt = entry.get("checkpoint") or entry["init"]
            entry["mosaic"] = mosaic_eval(name, ckpt, PFM1, args.int8)
            _save(results)
        return 0
    for name in args.stages:
        if name in results and not args.force:
            print(f"{name}: in {RESULTS.name}, skipped")
            continue
        print(f"== {name}", flush=True)
        run_stage(name, table[name], results, args.root, args.int8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
