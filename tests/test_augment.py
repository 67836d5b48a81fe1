"""Augmentations: each op alone and the full transforms, eagerly and inside tf.data.

Like big_vision's ops tests: the same op is run through a direct numpy call and through the exact
numpy_function wrapper the pipeline uses, because eager and graph execution can differ.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

from lresizervit.data import augment
from lresizervit.data.pipeline import numpy_map

S = 32  # model input size; images arrive with their shorter side == S
OP_NAMES = ["crop", "hflip", "color_jitter", "coarse_dropout"]


def _image(h: int = S, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _all_on_steps(size: int = S) -> dict[str, object]:
    steps = augment.train_steps(size, hflip_p=1.0, color_jitter_p=1.0, coarse_dropout_p=1.0)
    return dict(zip(OP_NAMES, steps, strict=True))


def _in_tf_data(transform, image: np.ndarray, out_shape) -> np.ndarray:
    ds = tf.data.Dataset.from_tensors(tf.constant(image)).map(numpy_map(transform, out_shape))
    assert ds.element_spec.shape.as_list() == list(out_shape)  # static shape survives numpy_function
    assert ds.element_spec.dtype == tf.uint8
    (out,) = list(ds.as_numpy_iterator())
    return out


def test_building_the_transforms_emits_no_warning():
    # albumentations 2.x warns (then ignores the value) for 1.x argument names: a warning is a silent bug.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augment.train_transform(S, seed=0)
        augment.eval_transform(S)


def test_train_steps_are_the_documented_ops_in_order():
    names = [type(step).__name__ for step in augment.train_steps(S)]
    assert names == ["RandomSizedCrop", "HorizontalFlip", "ColorJitter", "CoarseDropout"]


@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_alone_eager_and_in_tf_data_agree(name):
    image = _image()
    out_shape = (S, S, 3) if name == "crop" else image.shape
    # Same seed for both runs: with a single thread, graph and eager must be bit-identical, not just alike.
    eager = augment.apply_transform(augment.compose([_all_on_steps()[name]], seed=7), image)
    graph = _in_tf_data(augment.compose([_all_on_steps()[name]], seed=7), image, out_shape)
    assert eager.shape == graph.shape == tuple(out_shape)
    assert eager.dtype == graph.dtype == np.uint8
    np.testing.assert_array_equal(eager, graph)


@pytest.mark.parametrize("shape", [(S, 48), (56, S), (S, S)])
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_full_transforms_eager_and_in_tf_data_agree(kind, shape):
    image = _image(*shape)

    def make():
        return augment.train_transform(S, seed=3) if kind == "train" else augment.eval_transform(S)

    eager = augment.apply_transform(make(), image, short_side=S)
    graph = _in_tf_data(make(), image, (S, S, 3))
    assert eager.shape == graph.shape == (S, S, 3)
    assert eager.dtype == graph.dtype == np.uint8
    np.testing.assert_array_equal(eager, graph)


def test_random_crop_is_square_and_within_the_scale_range():
    crop = augment.train_steps(S, crop_scale_min=0.5)[0]
    transform = augment.compose([crop], seed=0)
    image = _image(S, 48)
    sides = set()
    for _ in range(100):
        out = transform(image=image)["image"]
        x1, y1, x2, y2 = crop.params["crop_coords"]
        assert x2 - x1 == y2 - y1  # square: the photo's aspect ratio is never distorted
        assert 0 <= x1 and x2 <= 48 and 0 <= y1 and y2 <= S
        sides.add(x2 - x1)
        assert out.shape == (S, S, 3)
    assert min(sides) >= math.floor(math.sqrt(0.5) * S) and max(sides) <= S
    assert len(sides) > 3  # the zoom really varies


def test_crop_with_scale_one_on_a_square_image_is_identity():
    crop = augment.train_steps(S, crop_scale_min=1.0)[0]
    image = _image(S, S)
    np.testing.assert_array_equal(augment.apply_transform(crop, image), image)


def test_hflip_flips_or_not():
    image = _image()
    flip = augment.train_steps(S, hflip_p=1.0)[1]
    no_flip = augment.train_steps(S, hflip_p=0.0)[1]
    np.testing.assert_array_equal(augment.apply_transform(flip, image), image[:, ::-1])
    np.testing.assert_array_equal(augment.apply_transform(no_flip, image), image)


def test_color_jitter_changes_colours_but_not_geometry():
    image = _image()
    out = augment.apply_transform(augment.compose([_all_on_steps()["color_jitter"]], seed=1), image)
    assert out.shape == image.shape
    assert not np.array_equal(out, image)
    # Mild jitter: brightness/contrast/saturation 0.2, hue 0.02, so no pixel soup.
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 60


def test_coarse_dropout_really_drops_pixels():
    """The 2.x names must take effect: with p=1, holes of fill 0 appear in an all-255 image."""
    dropout = _all_on_steps()["coarse_dropout"]
    transform = augment.compose([dropout], seed=0)
    image = np.full((64, 96, 3), 255, np.uint8)
    fractions, n_holes = [], []
    for _ in range(50):
        out = augment.apply_transform(transform, image)
        zero = (out == 0).all(axis=-1)
        assert ((out == 0) | (out == 255)).all()  # only whole-pixel holes of the fill value
        fractions.append(zero.mean())
        holes = dropout.params["holes"]  # [n, (x1, y1, x2, y2)]
        n_holes.append(len(holes))
        heights, widths = holes[:, 3] - holes[:, 1], holes[:, 2] - holes[:, 0]
        assert ((heights >= int(0.05 * 64)) & (heights <= int(0.15 * 64))).all()
        assert ((widths >= int(0.05 * 96)) & (widths <= int(0.15 * 96))).all()
    # Every call drops something; at most 4 holes of at most 15% x 15% of the image each.
    assert min(fractions) > 0
    assert max(fractions) <= 4 * 0.15 * 0.15 + 1e-9
    # Up to 4 holes: our num_holes_range, not the 2.x default (1, 2) an ignored 1.x argument would leave.
    assert set(n_holes) == {1, 2, 3, 4}


def test_eval_transform_is_a_deterministic_centre_crop():
    image = _image(S, 48)
    transform = augment.eval_transform(S)
    first = augment.apply_transform(transform, image)
    second = augment.apply_transform(transform, image)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, image[:, 8:40])
    portrait = _image(56, S)
    np.testing.assert_array_equal(augment.apply_transform(transform, portrait), portrait[12:44])


def test_train_transform_is_reproducible_with_a_seed():
    image = _image()

    def run(seed):
        transform = augment.train_transform(S, seed=seed)
        return [augment.apply_transform(transform, image) for _ in range(5)]

    for a, b in zip(run(11), run(11), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(run(11), run(12), strict=True))


def test_seeded_ops_draw_independently():
    """A.Compose(seed=s) seeds every op with the same s in albumentations 2.0.8, so equal-p ops fire
    together; compose() shares one stream instead. Checked on the ops' own applied params."""
    transform = augment.train_transform(S, hflip_p=0.5, color_jitter_p=0.5, seed=0)
    _, flip, jitter, _ = transform.transforms
    image = _image()
    agree = 0
    n = 200
    for _ in range(n):
        transform(image=image)
        agree += bool(flip.params) == bool(jitter.params)
    assert 0.3 * n < agree < 0.7 * n


def test_apply_transform_checks_its_input():
    transform = augment.eval_transform(S)
    with pytest.raises(ValueError, match="shorter side is 32"):
        augment.apply_transform(transform, _image(40, 48), short_side=S)
    with pytest.raises(ValueError, match="uint8"):
        augment.apply_transform(transform, _image().astype(np.float32))


def test_wrong_input_size_fails_inside_tf_data_with_the_sizes():
    ds = tf.data.Dataset.from_tensors(tf.constant(_image(40, 48)))
    ds = ds.map(numpy_map(augment.eval_transform(S), (S, S, 3), short_side=S))
    with pytest.raises(tf.errors.OpError, match="shorter side is 32"):
        list(ds)


@pytest.mark.parametrize(
    "kwargs",
    [{"crop_scale_min": 0.0}, {"crop_scale_min": 1.5}, {"hflip_p": -0.1}, {"coarse_dropout_p": 2.0}],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        augment.train_transform(S, **kwargs)
