import keras
import numpy as np
import pytest
import tensorflow as tf

from lresizervit.models.tta import predict_models, tta_views
from tests.facts import TASK


def test_hflip_view_flips_the_width_axis_only():
    img = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    plain, flipped = tta_views("hflip")
    x = {"image": tf.constant(img), "metadata": tf.zeros((2, 12))}
    np.testing.assert_array_equal(plain(x)["image"].numpy(), img)
    np.testing.assert_array_equal(flipped(x)["image"].numpy(), img[:, :, ::-1, :])
    np.testing.assert_array_equal(flipped(x)["metadata"].numpy(), np.zeros((2, 12)))
    assert len(tta_views("none")) == 1
    with pytest.raises(ValueError, match="predict.tta"):
        tta_views("vflip")


class _LeftMinusRight(keras.Model):
    """A model whose output changes under a horizontal flip: mean(left half) - mean(right half) + 50."""

    def call(self, x):
        img = keras.ops.cast(x["image"], "float32")
        w = img.shape[2] // 2
        return keras.ops.mean(img[:, :, :w], axis=(1, 2, 3)) - keras.ops.mean(img[:, :, w:], axis=(1, 2, 3)) + 50


def test_predict_models_averages_models_and_views_and_clips():
    img = np.zeros((5, 4, 4, 3), np.uint8)
    img[:, :, :2] = 40  # left half brighter: +40 plain, -40 flipped
    ds = tf.data.Dataset.from_tensor_slices(({"image": img, "metadata": np.zeros((5, 12), "float32")},
                                             np.zeros(5, "float32"))).batch(2)
    model = _LeftMinusRight(name="left_minus_right")
    np.testing.assert_allclose(predict_models([model], ds, "none", TASK), np.full(5, 90.0))
    np.testing.assert_allclose(predict_models([model], ds, "hflip", TASK), np.full(5, 50.0))  # (90 + 10) / 2
    img[:, :, :2] = 200  # 50 + 200 = 250 plain, -150 flipped: each view is averaged, then clipped
    ds2 = tf.data.Dataset.from_tensor_slices({"image": img, "metadata": np.zeros((5, 12), "float32")}).batch(3)
    np.testing.assert_allclose(predict_models([model, model], ds2, "none", TASK), np.full(5, 100.0))


def test_flip_zoom_adds_a_centre_zoom_and_its_mirror():
    img = np.full((1, 40, 60, 3), 100, np.uint8)
    img[:, :2] = 0  # a 2-px border row at the top: the 90 % centre crop (2 px each side) cuts it away
    img[:, :, -10:] = 255  # a bright right edge, moved left by the mirror
    x = {"image": tf.constant(img), "metadata": tf.zeros((1, 12))}
    views = [v(x)["image"].numpy() for v in tta_views("flip_zoom")]
    assert len(views) == 4 and all(v.shape == img.shape and v.dtype == np.uint8 for v in views)
    zoom, zoom_flip = views[2], views[3]
    assert zoom[0, 0, 20, 0] == 100  # the dark top rows are outside the crop
    assert zoom[0, 20, -1, 0] == 255 and zoom[0, 20, 0, 0] == 100
    np.testing.assert_array_equal(zoom_flip, zoom[:, :, ::-1])
