"""SavedModel backbones: fine-tuning with AdamW, .keras save/reload, size checks, offline hub, mixed precision.

Every test uses a tiny SavedModel exported here from the native ViT, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from lresizervit.models.backbones import (
    BackboneUnavailableError,
    TrainableTFSMLayer,
    backbone_patch_size,
    build_backbone,
    build_savedmodel_backbone,
    resolve_backbone_path,
)
from lresizervit.models.vit import VIT_VARIANTS, build_vit
from tests.tiny import BACKBONE

SIZE = 16
FEATURES = VIT_VARIANTS[BACKBONE].hidden_dim


@pytest.fixture(scope="module")
def savedmodel_dir(tmp_path_factory) -> str:
    """A SavedModel like TF-Hub's ViT feature extractors: float32 [None, 16, 16, 3] → {"output_0": [None, FEATURES]}."""
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("backbone") / "vit_tiny_fe")
    # model.export writes a "serve" tf.function and a "serving_default" signature over the same variables.
    build_vit(BACKBONE, SIZE).export(path, verbose=False)
    return path


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _data(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype("float32"), rng.uniform(0, 1, (n, 1)).astype("float32")


def _regressor(backbone: keras.Model | keras.layers.Layer) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(backbone(inputs)))
    model.compile(keras.optimizers.AdamW(1e-3), "mse")
    return model


def test_plain_tfsmlayer_fails_with_adamw(savedmodel_dir):
    # Documents why TrainableTFSMLayer exists: the SavedModel's ':0' names reach the optimizer's slot scopes.
    # If this starts passing, Keras fixed it and the override may go.
    model = _regressor(keras.layers.TFSMLayer(savedmodel_dir, call_endpoint="serve"))
    x, y = _data()
    with pytest.raises(ValueError, match="not a valid scope name"):
        model.fit(x, y, batch_size=2, verbose=0)


@pytest.mark.slow  # a fresh process imports TensorFlow (~7 s): not in make test-fast
def test_finetune_then_reload_in_new_process(savedmodel_dir, tmp_path):
    backbone = build_backbone("savedmodel:" + savedmodel_dir, SIZE)
    assert backbone.output_shape == (None, FEATURES)
    layer = backbone.get_layer("savedmodel")
    assert isinstance(layer, TrainableTFSMLayer)
    assert len(backbone.trainable_weights) > 0
    assert all(":" not in w.name for w in backbone.weights)

    model = _regressor(backbone)
    x, y = _data()
    kernel = next(w for w in backbone.weights if "projection_kernel" in w.name)
    kernel_before = kernel.numpy().copy()
    raw_before = layer.call_endpoint_fn(tf.constant(x))["output_0"].numpy()

    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 2 steps

    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(kernel.numpy(), kernel_before)
    # The endpoint reads the SavedModel's own variables: it sees the update, so they were wrapped, not copied.
    raw_after = layer.call_endpoint_fn(tf.constant(x))["output_0"].numpy()
    assert not np.allclose(raw_after, raw_before, atol=1e-4)

    keras_path = tmp_path / "finetuned.keras"
    model.save(keras_path)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "expected.npz", pred=model.predict(x, verbose=0), features=backbone.predict(x, verbose=0))

    script = textwrap.dedent(f"""
        import numpy as np, keras, tensorflow as tf
        import lresizervit.models.backbones  # registers TrainableTFSMLayer
        # A TFSMLayer runs an external SavedModel's graph: Keras only reloads it with safe_mode=False.
        try:
            keras.saving.load_model({str(keras_path)!r})
            raise SystemExit("safe_mode=True unexpectedly loaded a TFSMLayer")
        except ValueError as exc:
            assert "safe_mode=False" in str(exc), exc
        model = keras.saving.load_model({str(keras_path)!r}, safe_mode=False)
        x = np.load({str(tmp_path / "x.npy")!r})
        original = tf.saved_model.load({savedmodel_dir!r}).signatures["serving_default"](pixels=tf.constant(x))
        np.savez({str(tmp_path / "reloaded.npz")!r}, pred=model.predict(x, verbose=0),
                 features=model.get_layer("savedmodel_backbone").predict(x, verbose=0),
                 original=original["output_0"].numpy())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    expected, reloaded = np.load(tmp_path / "expected.npz"), np.load(tmp_path / "reloaded.npz")
    np.testing.assert_allclose(reloaded["pred"], expected["pred"], atol=1e-5)
    np.testing.assert_allclose(reloaded["features"], expected["features"], atol=1e-5)
    # The SavedModel on disk is untouched; the reloaded backbone carries the fine-tuned weights instead.
    np.testing.assert_allclose(reloaded["original"], raw_before, atol=1e-5)
    assert not np.allclose(reloaded["features"], reloaded["original"], atol=1e-4)


def test_reload_without_the_savedmodel_folder_names_it(savedmodel_dir, tmp_path):
    moved = str(tmp_path / "moved_backbone")
    shutil.copytree(savedmodel_dir, moved)
    model = _regressor(build_backbone("savedmodel:" + moved, SIZE))
    model.save(tmp_path / "m.keras")
    shutil.rmtree(moved)
    with pytest.raises(Exception, match="moved_backbone") as info:
        keras.saving.load_model(tmp_path / "m.keras", safe_mode=False)
    assert "same path" in str(info.value)


def test_serve_endpoint_returns_the_same_features(savedmodel_dir):
    x, _ = _data(2)
    by_signature = build_backbone("savedmodel:" + savedmodel_dir, SIZE)
    by_function = build_savedmodel_backbone("savedmodel:" + savedmodel_dir, SIZE, endpoint="serve")
    np.testing.assert_allclose(by_function.predict(x, verbose=0), by_signature.predict(x, verbose=0), atol=1e-6)


def test_wrong_size_names_both_sizes_and_the_config_key(savedmodel_dir):
    with pytest.raises(ValueError, match="model.resizer.target_size") as info:
        build_backbone("savedmodel:" + savedmodel_dir, 32)
    assert "16" in str(info.value) and "32" in str(info.value)
    # Without a resizer the backbone sees data.image_size: the caller names the key to change.
    with pytest.raises(ValueError, match="data.image_size"):
        build_backbone("savedmodel:" + savedmodel_dir, 32, size_key="data.image_size")


def test_missing_folder_or_saved_model_pb_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope.*saved_model.pb"):
        build_backbone(f"savedmodel:{missing}", SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*no saved_model.pb"):
        resolve_backbone_path(f"savedmodel:{empty}")


def test_hub_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    start = time.monotonic()
    # .invalid never resolves (RFC 2606): the same failure as no network, and never a real download.
    with pytest.raises(BackboneUnavailableError) as info:
        resolve_backbone_path("hub:https://tfhub.invalid/sayakpaul/vit_b16_fe/1")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "savedmodel:/kaggle/input/" in message and "TFHUB_CACHE_DIR" in message


def test_hub_uses_a_filled_cache_offline_and_keeps_local_paths(savedmodel_dir, tmp_path, monkeypatch):
    handle = "https://tfhub.invalid/sayakpaul/vit_tiny_fe/1"
    cache = tmp_path / "hub_cache"
    # Where tensorflow_hub 0.16 caches a download: a hit must skip the network probe entirely.
    shutil.copytree(savedmodel_dir, cache / hashlib.sha1(handle.encode("utf8")).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    resolved = resolve_backbone_path("hub:" + handle)
    assert resolved.startswith(str(cache))
    assert build_backbone("hub:" + handle, SIZE).output_shape == (None, FEATURES)
    # A local folder passes through tensorflow_hub.resolve unchanged.
    assert resolve_backbone_path("hub:" + savedmodel_dir) == savedmodel_dir


def test_mixed_bfloat16_keeps_the_signature_float32(savedmodel_dir, mixed_bfloat16):
    x, y = _data()
    # Why the layer pins float32: a plain TFSMLayer follows the global policy and feeds the signature bfloat16.
    with pytest.raises(TypeError, match="bfloat16"):
        keras.layers.TFSMLayer(savedmodel_dir, call_endpoint="serve")(tf.constant(x))

    backbone = build_backbone("savedmodel:" + savedmodel_dir, SIZE)
    layer = backbone.get_layer("savedmodel")
    assert layer.compute_dtype == "float32"
    seen: list[tf.DType] = []
    endpoint = layer.call_endpoint_fn

    def spy(inputs, **kwargs):
        seen.append(inputs.dtype)
        return endpoint(inputs, **kwargs)

    layer.call_endpoint_fn = spy
    inputs = keras.Input((SIZE, SIZE, 3))
    resized = keras.layers.Conv2D(3, 1, name="resizer_like")(inputs)  # the resizer emits bfloat16 here
    assert resized.dtype == "bfloat16"
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(backbone(resized)))
    model.compile(keras.optimizers.AdamW(1e-3), "mse")
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert seen and all(dtype == tf.float32 for dtype in seen)


def test_registry_names_and_patch_sizes(savedmodel_dir):
    native = build_backbone(BACKBONE, SIZE, pooling="gap")
    assert native.output_shape == (None, FEATURES)
    assert backbone_patch_size("vit_tiny_demo") == 4
    assert backbone_patch_size("savedmodel:/anywhere") is None
    assert backbone_patch_size("hub:https://tfhub.dev/x/1") is None
    with pytest.raises(ValueError, match="savedmodel:"):
        build_backbone("vit_nope", SIZE)
    with pytest.raises(ValueError, match="model.backbone.pooling"):
        build_backbone("savedmodel:" + savedmodel_dir, SIZE, pooling="gap")
