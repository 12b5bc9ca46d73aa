"""Augmentation declared in config, with albumentations; bbox-safe, keeping small objects."""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2


@dataclass
class AugmentConfig:
    """Which augmentations run in training, with their probabilities or ranges.

    Attributes:
        flips: Horizontal and vertical flips (nadir imagery has no up).
        rotate90: Random 90-degree rotations.
        scale: Zoom range (1 = none); boxes scale with the image.
        colour: Strength of brightness/contrast/saturation/hue jitter (0 = off).
        saturation: Range of saturation factors (0 = grey, 1 = unchanged) drawn with the colour jitter, in place
            of ``1 +/- colour``; a low end near grey makes flights of warm, saturated cameras look like the
            nearly grey renderings of others (None: ``1 +/- colour``).
        blur: Probability of Gaussian or motion blur.
        noise: Probability of sensor noise.
        jpeg: Probability of JPEG re-compression.
        min_visibility: A box cut by a crop is kept when at least this share of it remains.
    """

    flips: bool = True
    rotate90: bool = True
    scale: tuple[float, float] = (0.8, 1.25)
    colour: float = 0.2
    saturation: tuple[float, float] | None = None
    blur: float = 0.15
    noise: float = 0.15
    jpeg: float = 0.2
    min_visibility: float = 0.5


def _bbox_params(min_visibility: float) -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, clip=True)


def build_train_transform(config: AugmentConfig, crop_px: int) -> A.Compose:
    """Training pipeline ending in a ``crop_px`` square that holds at least one box when there is one.

    The zoom runs on the whole image (so a zoomed-out crop is filled with image where there is one), then the
    crop is cut, and every other step runs on the crop only: flips, rotations and the per-pixel steps cost the
    crop's pixels, not the tile's (a 256 px crop of a 768 px tile is a ninth of them), and they are the same
    operations on the same pixels whichever comes first.
    """
    steps: list[A.BasicTransform] = []
    if config.scale != (1.0, 1.0):
        steps.append(A.Affine(scale=config.scale, rotate=0, border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5))
    steps += [
        A.PadIfNeeded(crop_px, crop_px, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.AtLeastOneBBoxRandomCrop(height=crop_px, width=crop_px, erosion_factor=0.0),
    ]
    if config.flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if config.rotate90:
        steps.append(A.RandomRotate90(p=0.5))
    if config.colour > 0:
        c = config.colour
        saturation = tuple(config.saturation) if config.saturation is not None else c
        steps.append(A.ColorJitter(brightness=c, contrast=c, saturation=saturation, hue=c / 8, p=0.8))
    if config.blur > 0:
        steps.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=config.blur))
    if config.noise > 0:
        steps.append(A.GaussNoise(std_range=(0.01, 0.04), p=config.noise))
    if config.jpeg > 0:
        steps.append(A.ImageCompression(quality_range=(60, 95), p=config.jpeg))
    return A.Compose(steps, bbox_params=_bbox_params(config.min_visibility))


def build_eval_transform(tile_px: int) -> A.Compose:
    """Evaluation: pad (top-left, zeros) to a multiple of the tile; never resize, as the scorer."""
    return A.Compose(
        [
            A.PadIfNeeded(tile_px, tile_px, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.Crop(0, 0, tile_px, tile_px),
        ],
        bbox_params=_bbox_params(0.0),
    )
