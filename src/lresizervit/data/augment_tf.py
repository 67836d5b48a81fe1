"""The TF-only twin of ``augment``: the same training ops in graph mode, with no Python per image.

TPU input hosts cannot run ``tf.numpy_function`` (the albumentations path), so these ops are plain TF and
draw from stateless seeds. Their parameters are ``augment_params``'s, the very values ``augment`` builds its
albumentations ops from; albumentations itself is not imported.

Every op can take its image as a window reader, ``read_window(y, x, side)``, instead of a whole image: the
TFRecord reader passes one that decodes only that window of the stored JPEG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

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
)

__all__ = ["tf_eval_crop", "tf_eval_crop_window", "tf_train_augment", "tf_train_augment_window"]

# (y, x, side) -> the uint8 [side, side, 3] square of the image at (y, x).
WindowReader = Callable[[tf.Tensor, tf.Tensor, tf.Tensor | int], tf.Tensor]

# ITU-R 601 luma weights: the grey of albumentations' saturation and contrast (cv2 RGB2GRAY).
_LUMA = (0.299, 0.587, 0.114)


def tf_eval_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Deterministic centre square crop of ``size`` (as ``augment.eval_transform``): uint8 ``[S, S, 3]``."""
    shape = tf.shape(image)
    return tf_eval_crop_window(_slicer(image), shape[0], shape[1], size)


def tf_eval_crop_window(read_window: WindowReader, height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """``tf_eval_crop`` of the ``height`` x ``width`` image that ``read_window`` reads."""
    window = read_window((height - size) // 2, (width - size) // 2, size)
    return tf.ensure_shape(window, [size, size, 3])


def tf_train_augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    *,
    crop_scale_min: float = CROP_SCALE_MIN,
    hflip_p: float = HFLIP_P,
    color_jitter_p: float = COLOR_JITTER_P,
    coarse_dropout_p: float = COARSE_DROPOUT_P,
) -> tf.Tensor:
    """The TF-only twin of ``augment.train_transform`` for a uint8 ``[H, W, 3]`` image of shorter side ``size``.

    Random square crop (side in [sqrt(crop_scale_min), 1] x the shorter side, random position) resized to
    ``size`` -> hflip -> colour jitter -> coarse dropout. ``seed``: a ``[2]`` integer stateless seed; the
    same seed gives the same output. Returns uint8 ``[size, size, 3]``.
    """
    shape = tf.shape(image)
    return tf_train_augment_window(
        _slicer(image),
        shape[0],
        shape[1],
        seed,
        size,
        crop_scale_min=crop_scale_min,
        hflip_p=hflip_p,
        color_jitter_p=color_jitter_p,
        coarse_dropout_p=coarse_dropout_p,
    )


def tf_train_augment_window(
    read_window: WindowReader,
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    *,
    crop_scale_min: float = CROP_SCALE_MIN,
    hflip_p: float = HFLIP_P,
    color_jitter_p: float = COLOR_JITTER_P,
    coarse_dropout_p: float = COARSE_DROPOUT_P,
) -> tf.Tensor:
    """``tf_train_augment`` of the int32 ``height`` x ``width`` image that ``read_window`` reads.

    Same draws for the same seed, so the same pixels as ``tf_train_augment`` of the whole image.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    y, x, side = _crop_window(height, width, seeds[0], crop_scale_min)
    return _augment_square(read_window(y, x, side), seeds[1], size, hflip_p, color_jitter_p, coarse_dropout_p)


def _slicer(image: tf.Tensor) -> WindowReader:
    return lambda y, x, side: image[y : y + side, x : x + side]


def _crop_window(
    height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor, crop_scale_min: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(y, x, side) of a random square: side uniform in [round(sqrt(crop_scale_min) * short), short]."""
    short = tf.minimum(height, width)
    short_f = tf.cast(short, tf.float32)
    min_side = tf.clip_by_value(tf.cast(tf.round(math.sqrt(crop_scale_min) * short_f), tf.int32), 1, short)
    u = tf.random.stateless_uniform([3], seed=seed)
    # floor(u * count) with u in [0, 1) is uniform over 0..count-1; the minimum guards float rounding.
    side = tf.minimum(min_side + tf.cast(u[0] * tf.cast(short - min_side + 1, tf.float32), tf.int32), short)
    y = tf.minimum(tf.cast(u[1] * tf.cast(height - side + 1, tf.float32), tf.int32), height - side)
    x = tf.minimum(tf.cast(u[2] * tf.cast(width - side + 1, tf.float32), tf.int32), width - side)
    return y, x, side


def _augment_square(
    crop: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    hflip_p: float,
    color_jitter_p: float,
    coarse_dropout_p: float,
) -> tf.Tensor:
    """Square uint8 crop -> resized to ``size`` -> hflip -> colour jitter -> coarse dropout -> uint8.

    Float 0..255 with as few full-image ops as possible: at 384 px each op over the image costs ~0.35 ms
    of CPU, so the colour jitter is one 3x3 matrix, not four tf.image calls. (uint8 ops are no faster in
    TF: a reversed uint8 image costs the same, a uint8 multiply more.)
    """
    # One seed per draw: whether each op fires, and what the jitter and the dropout draw.
    s = tf.random.experimental.stateless_split(seed, num=5)
    # Bilinear, as albumentations' RandomSizedCrop (cv2 INTER_LINEAR); the crop is never larger than size,
    # and a convex combination of pixels stays in 0..255.
    # (Cast first: resize's own uint8 path is ~30 % slower.)
    image = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method="bilinear")

    def fires(p: float, op_seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform([], seed=op_seed) < p

    image = tf.cond(fires(hflip_p, s[0]), lambda: tf.reverse(image, axis=[1]), lambda: image)
    image = tf.cond(fires(color_jitter_p, s[1]), lambda: _color_jitter(image, s[2]), lambda: image)
    image = tf.cond(fires(coarse_dropout_p, s[3]), lambda: _coarse_dropout(image, s[4], size), lambda: image)
    out = tf.saturate_cast(tf.round(image), tf.uint8)  # clamps too: the jitter leaves values unclipped
    return tf.ensure_shape(out, [size, size, 3])


def _color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    brightness: float = JITTER_BRIGHTNESS,
    contrast: float = JITTER_CONTRAST,
    saturation: float = JITTER_SATURATION,
    hue: float = JITTER_HUE,
) -> tf.Tensor:
    """Brightness, contrast, saturation and hue changes of ``augment.train_steps``' ColorJitter.

    Each is linear in RGB, so they compose to ONE 3x3 matrix and offset, applied in a single pass:
    brightness scales by b; contrast pulls towards the image's mean grey, m + c (x - m); saturation
    pulls towards each pixel's grey, g + s (x - g); hue rotates about the grey axis by 2 pi h (the
    YIQ-style rotation, which matches an HSV hue shift closely at these small angles). The result is NOT
    clipped: the final ``saturate_cast`` to uint8 clamps it once (albumentations saturates after each op,
    which differs only where the mild factors push a pixel past 255 midway).
    """
    u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    b, c, sat = 1.0 + brightness * u[0], 1.0 + contrast * u[1], 1.0 + saturation * u[2]
    theta = 2.0 * math.pi * hue * u[3]
    eye = tf.eye(3)
    luma = tf.constant([_LUMA])  # [1, 3]
    ones = tf.ones([3, 1])
    # x -> m x + t, with x a column RGB vector; start from brightness.
    m = b * eye
    t = tf.zeros([3, 1])
    # The image's mean grey, after the brightness change; every 4th row and column estimate it closely
    # at a 16th of the cost.
    mean_grey = b * tf.reduce_sum(luma * tf.reduce_mean(image[::4, ::4], axis=[0, 1])[None, :])
    m, t = c * m, c * t + (1.0 - c) * mean_grey * ones
    to_grey = sat * eye + (1.0 - sat) * ones @ luma  # x -> s x + (1 - s) (luma . x) 1
    m, t = to_grey @ m, to_grey @ t
    # Rodrigues' rotation about the unit grey axis (1, 1, 1) / sqrt(3).
    cross = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)
    rot = tf.cos(theta) * eye + tf.sin(theta) * cross + (1.0 - tf.cos(theta)) * tf.fill([3, 3], 1.0 / 3.0)
    m, t = rot @ m, rot @ t
    # A plain [pixels, 3] x [3, 3] matmul: ~1.6x faster than tensordot on the [S, S, 3] image.
    out = tf.matmul(tf.reshape(image, [-1, 3]), m, transpose_b=True) + tf.reshape(t, [1, 3])
    return tf.reshape(out, tf.shape(image))


def _coarse_dropout(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    holes: tuple[int, int] = DROPOUT_HOLES,
    hole_fraction: tuple[float, float] = DROPOUT_HOLE_FRACTION,
    fill: float = DROPOUT_FILL,
) -> tf.Tensor:
    """``holes`` (inclusive range) rectangles, each side ``hole_fraction`` of ``size``, set to ``fill``."""
    min_holes, max_holes = holes
    lo, hi = hole_fraction
    s = tf.random.experimental.stateless_split(seed, num=2)
    n_holes = tf.random.stateless_uniform([], s[0], minval=min_holes, maxval=max_holes + 1, dtype=tf.int32)
    u = tf.random.stateless_uniform([max_holes, 4], s[1])
    hole_h = tf.maximum(1, tf.cast(tf.round((lo + (hi - lo) * u[:, 0]) * size), tf.int32))
    hole_w = tf.maximum(1, tf.cast(tf.round((lo + (hi - lo) * u[:, 1]) * size), tf.int32))
    y0 = tf.cast(u[:, 2] * tf.cast(size - hole_h + 1, tf.float32), tf.int32)
    x0 = tf.cast(u[:, 3] * tf.cast(size - hole_w + 1, tf.float32), tf.int32)
    pos = tf.range(size)[None, :]
    active = tf.cast(tf.range(max_holes) < n_holes, tf.float32)[:, None]
    in_rows = (
        tf.cast((pos >= y0[:, None]) & (pos < (y0 + hole_h)[:, None]), tf.float32) * active
    )  # [holes, S]
    in_cols = tf.cast((pos >= x0[:, None]) & (pos < (x0 + hole_w)[:, None]), tf.float32)  # [holes, S]
    # A hole is the outer product of its rows and columns; the sum over holes counts the holes on each pixel.
    covered = tf.matmul(in_rows, in_cols, transpose_a=True)  # [S, S]
    return tf.where((covered > 0.0)[..., None], tf.cast(fill, image.dtype), image)
