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


def test_items_know_their_minefield():
    """Every placed item names its layout pattern: AT mines of one pattern lie on one line (a row), an isolated UXO
    is a pattern of its own, and look-alikes belong to none."""
    from ordnance.datasets.synth.layout import make_scene

    seen_rows = 0
    for seed in range(12):
        spec = make_scene(seed, 0.01, 12000, 12000, patterns=6)
        assert spec.items and all(p.pattern >= 0 for p in spec.items)
        by_pattern: dict[int, list] = {}
        for p in spec.items:
            by_pattern.setdefault(p.pattern, []).append(p)
        for members in by_pattern.values():
            at = np.array([[p.x_px, p.y_px] for p in members if p.name in ("tm62", "tm57")]) * 0.01
            if len(at) >= 3:
                centred = at - at.mean(0)
                residual = np.linalg.svd(centred, compute_uv=False)[1] / np.sqrt(len(at))
                assert residual < 0.5, residual  # metres off the row's line (placement noise is 0.2 m)
                seen_rows += 1
            if any(p.name in ("projectile", "mortar", "grenade") for p in members) and all(
                p.name not in ("submunition",) for p in members
            ):
                assert len(members) == 1  # an isolated UXO stands alone
    assert seen_rows >= 2


def test_layouts_choose_which_patterns_a_scene_draws():
    """Restricting the layouts keeps only their items; naming all of them draws what the default draws (the same
    random stream), and the command line offers the generator's names."""
    from ordnance.datasets.cli import LAYOUTS
    from ordnance.datasets.synth.layout import PATTERNS, make_scene

    assert set(LAYOUTS) == set(PATTERNS)
    for seed in range(4):
        rows = make_scene(seed, 0.01, 12000, 12000, patterns=5, layouts=("at_row",))
        assert rows.items and {p.name for p in rows.items} <= {"tm62", "tm57"}
        assert len({p.pattern for p in rows.items}) >= 2
        assert make_scene(seed, 0.01, 12000, 12000, layouts=tuple(PATTERNS)) == make_scene(seed, 0.01, 12000, 12000)
    with pytest.raises(ValueError, match="layouts must be names"):
        make_scene(0, 0.01, 1000, 1000, layouts=("minefield",))
