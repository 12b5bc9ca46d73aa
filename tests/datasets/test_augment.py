"""Training augmentation: what the colour jitter's saturation range does to a crop."""

from __future__ import annotations

import numpy as np
from ordnance.datasets.augment import AugmentConfig, build_train_transform


def _chroma(image: np.ndarray) -> float:
    """Mean spread between a pixel's largest and smallest channel: 0 for grey."""
    image = image.astype(np.float64)
    return float((image.max(-1) - image.min(-1)).mean())


def _outputs(saturation, n: int = 300) -> np.ndarray:
    import albumentations as A

    config = AugmentConfig(flips=False, rotate90=False, scale=(1.0, 1.0), colour=0.25, saturation=saturation,
                           blur=0, noise=0, jpeg=0)  # fmt: skip
    transform = build_train_transform(config, 64)
    transform.set_random_seed(0)
    image = np.empty((64, 64, 3), np.uint8)
    image[...] = (200, 130, 70)  # a warm tan, chroma 130
    assert isinstance(transform, A.Compose)
    return np.array([_chroma(transform(image=image, bboxes=[[10, 10, 30, 20]], labels=[0])["image"]) for _ in range(n)])


def test_saturation_range_reaches_near_grey_and_the_default_does_not():
    default, grey = _outputs(None), _outputs((0.2, 1.25))
    # 1 +/- 0.25: saturation, contrast and brightness each take at most a quarter of the chroma (0.75 ** 3 = 0.42)
    assert default.min() > 0.4 * 130
    assert (default < 0.35 * 130).sum() == 0
    # down to a fifth: some crops come out nearly grey, as the Phantom 4 flights of 2020 render the ground
    assert grey.min() < 0.2 * 130
    assert (grey < 0.35 * 130).mean() > 0.1
