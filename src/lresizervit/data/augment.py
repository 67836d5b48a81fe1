"""albumentations 2.x pipelines for training and evaluation.

Both expect an image whose shorter side already equals ``size`` (``decode.load_image``), so the only
geometric work left is a square crop: the aspect ratio of the photo is never distorted.

Argument names are the albumentations 2.x ones. 2.x still *accepts* the 1.x names of e.g. ``CoarseDropout``
(``max_holes``, ``max_height``, ``fill_value``) with a warning and then ignores them, so the tests check the
effect of each op, not just that it builds. The ops' parameters are ``augment_params``'s, which the TF-only
twin ``augment_tf`` reads too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

# Safe to import directly: Python imports the parent package `lresizervit` first, and it sets
# NO_ALBUMENTATIONS_UPDATE so albumentations does not query PyPI.
import albumentations as A
import numpy as np

from lresizervit.data.augment_params import (
    COARSE_DROPOUT_P,
    COLOR_JITTER_P,
    CROP_SCALE_MIN,
    DROPOUT_FILL,
    DROPOUT_HOLE_FRACTION,
    DROPOUT_HOLES,
    HFLIP_P,
    JITTER_BRIGHTNESS,
    JITTER_CONTRAST,
    JITTER_HUE,
    JITTER_SATURATION,
    train_params,
)

__all__ = [
    "apply_transform",
    "compose",
    "eval_steps",
    "eval_transform",
    "train_steps",
    "train_transform",
]


def train_steps(
    size: int,
    *,
    crop_scale_min: float = CROP_SCALE_MIN,
    hflip_p: float = HFLIP_P,
    color_jitter_p: float = COLOR_JITTER_P,
    coarse_dropout_p: float = COARSE_DROPOUT_P,
) -> list[A.BasicTransform]:
    """The training ops, in order, unseeded: each can be run (and tested) alone.

    ``crop_scale_min`` is the smallest crop *area* as a fraction of ``size**2``; the crop is always square.
    """
    _check_size(size)
    train_params(
        crop_scale_min=crop_scale_min,
        hflip_p=hflip_p,
        color_jitter_p=color_jitter_p,
        coarse_dropout_p=coarse_dropout_p,
    )
    min_side = min(size, max(1, round(math.sqrt(crop_scale_min) * size)))
    return [
        # Square crop of the shorter-side-resized photo: a random zoom and position, no aspect distortion.
        A.RandomSizedCrop(min_max_height=(min_side, size), size=(size, size), w2h_ratio=1.0, p=1.0),
        A.HorizontalFlip(p=hflip_p),
        A.ColorJitter(
            brightness=JITTER_BRIGHTNESS,
            contrast=JITTER_CONTRAST,
            saturation=JITTER_SATURATION,
            hue=JITTER_HUE,
            p=color_jitter_p,
        ),
        A.CoarseDropout(
            num_holes_range=DROPOUT_HOLES,
            hole_height_range=DROPOUT_HOLE_FRACTION,
            hole_width_range=DROPOUT_HOLE_FRACTION,
            fill=DROPOUT_FILL,
            p=coarse_dropout_p,
        ),
    ]


def eval_steps(size: int) -> list[A.BasicTransform]:
    """The evaluation ops: a deterministic centre square crop of ``size`` x ``size``."""
    _check_size(size)
    return [A.CenterCrop(height=size, width=size, p=1.0)]


def compose(steps: Sequence[A.BasicTransform], seed: int | None = None) -> A.Compose:
    """Wrap ``steps`` in an ``A.Compose`` drawing from ONE random stream seeded by ``seed``.

    ``A.Compose(seed=s)`` in albumentations 2.0.8 gives every op its own generator seeded with the same ``s``,
    so ops draw identical numbers: with equal probabilities, e.g. the flip and the colour jitter would then
    always fire together. Sharing one stream keeps the ops independent and still reproducible.
    """
    transform = A.Compose(list(steps))
    if seed is not None:
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform


def train_transform(
    size: int,
    *,
    crop_scale_min: float = CROP_SCALE_MIN,
    hflip_p: float = HFLIP_P,
    color_jitter_p: float = COLOR_JITTER_P,
    coarse_dropout_p: float = COARSE_DROPOUT_P,
    seed: int | None = None,
) -> A.Compose:
    """Random square crop -> hflip -> colour jitter -> coarse dropout, for an image whose shorter side is ``size``.

    With ``seed`` the sequence of augmentations is reproducible when the transform is called from one thread.
    """
    steps = train_steps(
        size,
        crop_scale_min=crop_scale_min,
        hflip_p=hflip_p,
        color_jitter_p=color_jitter_p,
        coarse_dropout_p=coarse_dropout_p,
    )
    return compose(steps, seed=seed)


def eval_transform(size: int) -> A.Compose:
    """Deterministic centre square crop, for an image whose shorter side is ``size``."""
    return compose(eval_steps(size))


def apply_transform(
    transform: A.BasicTransform | A.Compose, image: np.ndarray, *, short_side: int | None = None
) -> np.ndarray:
    """Run ``transform`` on one uint8 ``[H, W, 3]`` image and return a contiguous uint8 array.

    This is the body the tf.data pipeline runs inside ``tf.numpy_function``; ``short_side`` checks the
    input contract so that a wrong upstream size fails here, with the sizes, rather than deep inside an op.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if short_side is not None and min(image.shape[:2]) != short_side:
        raise ValueError(f"expected an image whose shorter side is {short_side}, got shape {image.shape}")
    out = transform(image=image)["image"]
    return np.ascontiguousarray(out, dtype=np.uint8)


def _check_size(size: int) -> None:
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
