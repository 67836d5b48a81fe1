"""The TF-only augmentations (``augment_tf``): each op eagerly and inside tf.data, and the parameters they
share with the albumentations ones (``augment``)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow as tf

from lresizervit.data import augment, augment_params, augment_tf
from lresizervit.data.augment_tf import (
    tf_eval_crop,
    tf_eval_crop_window,
    tf_train_augment,
    tf_train_augment_window,
)
from tests.conftest import photo_like

S = 32
NO_AUG = {"hflip_p": 0.0, "color_jitter_p": 0.0, "coarse_dropout_p": 0.0}


def _run_both_ways(fn, image: np.ndarray) -> list[np.ndarray]:
    eager = fn(tf.constant(image)).numpy()
    graph = next(iter(tf.data.Dataset.from_tensors(image).map(fn))).numpy()
    return [eager, graph]


def _keyword_defaults(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def test_tf_train_augment_defaults_are_the_albumentations_defaults():
    assert _keyword_defaults(tf_train_augment) == _keyword_defaults(augment.train_steps)
    assert _keyword_defaults(tf_train_augment_window) == _keyword_defaults(augment.train_steps)
    assert _keyword_defaults(augment.train_steps) == augment_params.train_params()


def test_both_implementations_take_their_fixed_parameters_from_augment_params():
    _, _, jitter, dropout = augment.train_steps(S)
    assert jitter.brightness == (1 - augment_params.JITTER_BRIGHTNESS, 1 + augment_params.JITTER_BRIGHTNESS)
    assert jitter.contrast == (1 - augment_params.JITTER_CONTRAST, 1 + augment_params.JITTER_CONTRAST)
    assert jitter.saturation == (1 - augment_params.JITTER_SATURATION, 1 + augment_params.JITTER_SATURATION)
    assert jitter.hue == (-augment_params.JITTER_HUE, augment_params.JITTER_HUE)
    assert dropout.num_holes_range == augment_params.DROPOUT_HOLES
    assert dropout.hole_height_range == dropout.hole_width_range == augment_params.DROPOUT_HOLE_FRACTION
    assert dropout.fill == augment_params.DROPOUT_FILL
    tf_jitter = inspect.signature(augment_tf._color_jitter).parameters
    assert [tf_jitter[k].default for k in ("brightness", "contrast", "saturation", "hue")] == [
        augment_params.JITTER_BRIGHTNESS,
        augment_params.JITTER_CONTRAST,
        augment_params.JITTER_SATURATION,
        augment_params.JITTER_HUE,
    ]
    tf_dropout = inspect.signature(augment_tf._coarse_dropout).parameters
    assert tf_dropout["holes"].default == augment_params.DROPOUT_HOLES
    assert tf_dropout["hole_fraction"].default == augment_params.DROPOUT_HOLE_FRACTION
    assert tf_dropout["fill"].default == augment_params.DROPOUT_FILL


def test_bad_parameters_are_refused_with_the_albumentations_messages():
    for kwargs, message in (
        ({"crop_scale_min": 0.0}, r"crop_scale_min must be in \(0, 1\]"),
        ({"color_jitter_p": -0.1}, r"color_jitter_p must be a probability"),
    ):
        with pytest.raises(ValueError, match=message):
            augment_params.train_params(**kwargs)
        with pytest.raises(ValueError, match=message):
            augment.train_steps(S, **kwargs)


@pytest.mark.parametrize("shape", [(S, 57), (71, S), (S, S)])
def test_tf_train_augment_output_is_square(shape):
    image = photo_like(np.random.default_rng(1), *shape)
    for i in range(4):
        for out in _run_both_ways(lambda x, i=i: tf_train_augment(x, tf.constant([i, 7]), S), image):
            assert out.shape == (S, S, 3) and out.dtype == np.uint8
    assert tf_eval_crop(tf.constant(image), S).shape == (S, S, 3)


def test_tf_train_augment_with_no_op_is_identity_and_flip_flips():
    image = photo_like(np.random.default_rng(2), S, S)
    seed = tf.constant([3, 4])
    identity = {"crop_scale_min": 1.0, **NO_AUG}
    for out in _run_both_ways(lambda x: tf_train_augment(x, seed, S, **identity), image):
        np.testing.assert_array_equal(out, image)
    flip = {**identity, "hflip_p": 1.0}
    for out in _run_both_ways(lambda x: tf_train_augment(x, seed, S, **flip), image):
        np.testing.assert_array_equal(out, image[:, ::-1])


def test_tf_coarse_dropout_zeroes_whole_pixels_in_1_to_4_small_holes():
    size = 64
    image = np.full((size, size, 3), 200, np.uint8)
    kwargs = {"crop_scale_min": 1.0, **NO_AUG, "coarse_dropout_p": 1.0}
    for i in range(5):
        for out in _run_both_ways(
            lambda x, i=i: tf_train_augment(x, tf.constant([i, 0]), size, **kwargs), image
        ):
            zero = (out == 0).all(axis=2)
            assert ((out == 0) | (out == 200)).all() and (zero == (out == 0).any(axis=2)).all()
            # at least one hole of >= 3 x 3 px (5 % of 64), at most four of <= 10 x 10 px (15 %)
            assert 9 <= zero.sum() <= 4 * 10 * 10


def test_tf_color_jitter_is_mild_and_crop_window_stays_inside():
    image = photo_like(np.random.default_rng(3), S, S)
    kwargs = {"crop_scale_min": 1.0, **NO_AUG, "color_jitter_p": 1.0}
    outs = [tf_train_augment(tf.constant(image), tf.constant([i, 1]), S, **kwargs).numpy() for i in range(3)]
    assert all(not np.array_equal(o, image) for o in outs)
    assert all(np.abs(o.astype(np.int16) - image).mean() < 0.25 * 255 for o in outs)
    for i in range(30):
        y, x, side = (
            int(v)
            for v in augment_tf._crop_window(tf.constant(40), tf.constant(90), tf.constant([i, 2]), 0.49)
        )
        assert round(0.7 * 40) <= side <= 40 and 0 <= y <= 40 - side and 0 <= x <= 90 - side




@pytest.mark.parametrize("shape", [(S, 57), (71, S)])
def test_window_readers_give_the_whole_image_ops_pixels(shape):
    image = photo_like(np.random.default_rng(4), *shape)
    seed = tf.constant([5, 6])

    def reader(x):
        # What the TFRecord reader's JPEG window decoder returns, from a decoded image.
        return lambda y0, x0, side: x[y0 : y0 + side, x0 : x0 + side]

    def train_window(x):
        return tf_train_augment_window(reader(x), tf.shape(x)[0], tf.shape(x)[1], seed, S, color_jitter_p=1.0)

    def eval_window(x):
        return tf_eval_crop_window(reader(x), tf.shape(x)[0], tf.shape(x)[1], S)

    whole = tf_train_augment(tf.constant(image), seed, S, color_jitter_p=1.0).numpy()
    for out in _run_both_ways(train_window, image):
        np.testing.assert_array_equal(out, whole)
    centre = tf_eval_crop(tf.constant(image), S).numpy()
    for out in _run_both_ways(eval_window, image) + _run_both_ways(lambda x: tf_eval_crop(x, S), image):
        np.testing.assert_array_equal(out, centre)
