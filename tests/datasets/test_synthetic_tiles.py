"""Synthetic tile datasets: training scenes may carry more look-alikes; validation scenes never change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from ordnance.datasets.synth.layout import make_scene
from ordnance.datasets.synth.scene import _lookalikes
from ordnance.datasets.synth.writers import write_tile_dataset


def _files(root: Path, split: str, kind: str) -> list[Path]:
    return sorted((root / split / kind).iterdir())


def test_lookalike_scale_adds_hard_negatives_to_training_scenes_only(tmp_path):
    plain = write_tile_dataset(tmp_path / "plain", n_train=3, n_valid=2, tile_px=256, seed=7, workers=1).parent
    dense = write_tile_dataset(
        tmp_path / "dense", n_train=3, n_valid=2, tile_px=256, seed=7, workers=1, train_lookalike_scale=4.0
    ).parent
    # validation scenes are the generator's own: the same pixels and labels whatever the training set holds
    for kind in ("images", "labels"):
        for a, b in zip(_files(plain, "valid", kind), _files(dense, "valid", kind), strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name
    # training scenes keep their items (same labels) and gain look-alikes (changed pixels)
    for a, b in zip(_files(plain, "train", "labels"), _files(dense, "train", "labels"), strict=True):
        assert a.read_text() == b.read_text()
    changed = [
        float(np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(b))).mean())
        for a, b in zip(_files(plain, "train", "images"), _files(dense, "train", "images"), strict=True)
    ]
    assert max(changed) > 1.0, changed


def test_lookalike_density_scales_the_drawn_count():
    spec = make_scene(11, 0.01, 2048, 2048)
    base = len(_lookalikes(spec, 0, 0, 2048, 2048))
    tripled = len(_lookalikes(replace(spec, lookalikes_per_m2=spec.lookalikes_per_m2 * 3), 0, 0, 2048, 2048))
    assert base > 0 and 2.2 * base < tripled < 3.8 * base, (base, tripled)


def test_lookalike_scale_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="train_lookalike_scale must be positive"):
        write_tile_dataset(tmp_path, n_train=1, n_valid=1, tile_px=128, workers=1, train_lookalike_scale=0.0)
