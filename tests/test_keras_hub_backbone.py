"""keras-hub presets as backbones: one tiny preset per family, written here with save_to_preset (nothing
downloads), loaded through `keras_hub:<folder>`; input convention, pooling rule, sizes, training, frozen
training, a fold's model files reloaded in a fresh process without the preset, offline names.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from lresizervit.config import BackboneConfig, ModelConfig, ResizerConfig
from lresizervit.models.backbones import BackboneUnavailableError, backbone_patch_size, build_backbone
from lresizervit.models.keras_hub_backbone import FeaturePooling, PresetImageScaling
from lresizervit.models.regressor import build_regressor, make_loss
from tests.facts import META_COLUMNS, TASK

# keras-hub's Swin passes its attention mask along in a way Keras warns about: theirs, and harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'attn' \\(of type WindowAttention\\):UserWarning")

SIZE = 32
FAMILIES = ("vit", "swin", "dinov2", "dinov3", "clip", "siglip", "resnet")
# Each family's declared rule (keras_hub_backbone.py's table); None: the model's own pooled output.
POOLING = {"vit": "class_token", "swin": "mean_tokens", "dinov2": "class_token", "dinov3": "class_token",
           "clip": "class_token", "siglip": None, "resnet": "global_average"}
FEATURES = {"vit": 16, "swin": 16, "dinov2": 16, "dinov3": 16, "clip": 16, "siglip": 16, "resnet": 16}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)


def _mean_std(mean, std) -> dict:
    """Converter arguments normalising [0, 255] pixels by mean and std (as keras-hub presets store them)."""
    return {"scale": [1 / (255 * s) for s in std], "offset": [-m / s for m, s in zip(mean, std, strict=True)]}


def write_tiny_preset(family: str, folder, size: int = SIZE) -> str:
    """A tiny randomly initialised preset of `family` (2 layers, width 16) with its image converter."""
    keras.utils.set_random_seed(0)
    m, lay = keras_hub.models, keras_hub.layers
    shape = (size, size, 3)
    common = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16}
    imagenet = _mean_std(IMAGENET_MEAN, IMAGENET_STD)
    if family == "vit":
        backbone = m.ViTBackbone(image_shape=shape, patch_size=8, mlp_dim=32, **common)
        converter = lay.ViTImageConverter(scale=1 / 127.5, offset=-1.0, image_size=(size, size))
    elif family == "swin":
        backbone = m.SwinTransformerBackbone(image_shape=shape, embed_dim=8, depths=(2, 2), num_heads=(2, 2),
                                             window_size=4, patch_size=4)
        converter = lay.SwinTransformerImageConverter(image_size=(size, size), **imagenet)
    elif family == "dinov2":
        backbone = m.DINOV2Backbone(patch_size=4, intermediate_dim=32, image_shape=shape,
                                    position_embedding_shape=shape, **common)
        converter = lay.DINOV2ImageConverter(image_size=(size, size), **imagenet)
    elif family == "dinov3":
        backbone = m.DINOV3Backbone(patch_size=4, intermediate_dim=32, image_shape=shape, **common)
        converter = lay.DINOV3ImageConverter(image_size=(size, size), **imagenet)
    elif family == "clip":
        vision = m.CLIPVisionEncoder(patch_size=8, intermediate_dim=32, image_shape=shape, **common)
        text = m.CLIPTextEncoder(vocabulary_size=32, embedding_dim=16, intermediate_dim=32,
                                 max_sequence_length=8, **{**common, "num_layers": 1})
        backbone = m.CLIPBackbone(vision, text, projection_dim=8)
        converter = lay.CLIPImageConverter(image_size=(size, size), **_mean_std(CLIP_MEAN, CLIP_STD))
    elif family == "siglip":
        vision = m.SigLIPVisionEncoder(patch_size=8, intermediate_dim=32, image_shape=shape, **common)
        text = m.SigLIPTextEncoder(vocabulary_size=32, embedding_dim=16, intermediate_dim=32,
                                   max_sequence_length=8, **{**common, "num_layers": 1})
        backbone = m.SigLIPBackbone(vision, text)
        converter = lay.SigLIPImageConverter(scale=1 / 127.5, offset=-1.0, image_size=(size, size))
    elif family == "resnet":
        # keras-hub's ResNet insists on 64 filters in its stem and first stage.
        backbone = m.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                    stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                                    stackwise_num_strides=[1, 2], block_type="basic_block")
        # A scalar scale with no offset: [0, 1] inputs, as some CNN presets take.
        converter = lay.ResNetImageConverter(image_size=(size, size), scale=1 / 255)
    else:
        raise ValueError(family)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("presets")
    return {family: write_tiny_preset(family, root / family) for family in FAMILIES}


def _images(n: int = 2, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype="uint8")


def _pixels(images: np.ndarray) -> np.ndarray:
    return images.astype("float32") / 127.5 - 1.0


def _regressor_cfg(spec: str, mode: str, target_size: int) -> ModelConfig:
    return ModelConfig(resizer=ResizerConfig(mode=mode, target_size=target_size, filters=4),
                       backbone=BackboneConfig(name=spec), metadata_units=4, head_units=8)


def _declared_pooling(family: str, tokens):
    tokens = ops.convert_to_numpy(tokens)
    rule = POOLING[family]
    if rule == "class_token":
        return tokens[:, 0]
    if rule == "mean_tokens":
        return tokens.mean(axis=1)
    if rule == "global_average":
        return tokens.mean(axis=(1, 2))
    return tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_sees_what_the_presets_converter_produces(presets, family):
    spec = "keras_hub:" + presets[family]
    images = _images()
    # The whole regressor, resizer "none": uint8 → its own [-1, 1] scaling → the keras-hub backbone.
    model = build_regressor(_regressor_cfg(spec, "none", SIZE), SIZE, TASK)
    scaled = model.get_layer("scale_pixels")(ops.cast(images, "float32"))
    backbone = model.get_layer("keras_hub_backbone")
    fed = keras.Model(backbone.input, backbone.get_layer("preset_inputs").output)(scaled)

    converter = keras_hub.layers.ImageConverter.from_preset(presets[family])
    expected = ops.convert_to_numpy(converter(images))
    np.testing.assert_allclose(ops.convert_to_numpy(fed), expected, rtol=1e-5, atol=1e-5)

    # The pooled feature is the family's declared rule applied to the preset's own model and converter.
    reference = keras_hub.models.Backbone.from_preset(presets[family])
    if family in ("clip", "siglip"):
        reference = reference.vision_encoder
    if isinstance(reference.input, dict):
        raw = reference({next(iter(reference.input)): expected})
    else:
        raw = reference(expected)
    features = backbone(scaled)
    assert features.shape == (2, FEATURES[family])
    np.testing.assert_allclose(ops.convert_to_numpy(features), _declared_pooling(family, raw), rtol=1e-4,
                               atol=1e-4)
    pooling = [layer for layer in backbone.layers if isinstance(layer, FeaturePooling)]
    assert [p.rule for p in pooling] == ([POOLING[family]] if POOLING[family] else [])


def _backbone_state(backbone: keras.Model) -> list[np.ndarray]:
    return [ops.convert_to_numpy(v).copy() for v in backbone.weights]


def _one_step(model: keras.Model, backbone: keras.Model, size: int = SIZE) -> tuple[list, list]:
    x = _pixels(_images(4, size, seed=1))
    y = np.linspace(0.0, 1.0, 4, dtype="float32").reshape(4, 1)
    before = _backbone_state(backbone)
    model.compile(keras.optimizers.SGD(0.5), "mse", run_eagerly=True)
    model.train_on_batch(x, y)
    return before, _backbone_state(backbone)


def _with_head(backbone: keras.Model, size: int = SIZE) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(backbone(inputs)))


@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_trains_the_backbone_unless_frozen(presets, family):
    backbone = build_backbone("keras_hub:" + presets[family], SIZE)
    model = _with_head(backbone)
    assert backbone.trainable_weights
    before, after = _one_step(model, backbone)
    trainable = {id(v) for v in backbone.trainable_weights}
    changed = [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]
    still = [v.path for v, c in zip(backbone.weights, changed, strict=True) if id(v) in trainable and not c]
    assert not still, f"trainable weights that one step left unchanged: {still}"

    backbone.trainable = False
    head_before = ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    before, after = _one_step(model, backbone)
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert not np.array_equal(ops.convert_to_numpy(model.get_layer("head").kernel), head_before)


# Reloaded below in one fresh process; DINOv2 also at a size other than its preset's (interpolated).
RELOADED = (*((family, SIZE) for family in FAMILIES), ("dinov2", 48))


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory) -> dict:
    """Per (family, size): predictions of a regressor trained one step, and of its fold files (model.weights.h5
    + model.json, beside the experiment's config.yaml) reloaded in a new process after the preset folder was
    deleted: the keras-hub backbone's architecture travels in model.json."""
    from lresizervit.config import Config, save_config
    from lresizervit.models.fold_model import save_fold_model

    root = tmp_path_factory.mktemp("reload")
    expected, paths = {}, {}
    rng = np.random.default_rng(2)
    for family, size in RELOADED:
        key = f"{family}_{size}"
        folder = write_tiny_preset(family, root / f"preset_{key}")
        cfg = Config(model=_regressor_cfg("keras_hub:" + folder, "none", size))
        cfg.data.image_size = size
        save_config(cfg, root / key / "config.yaml")
        model = build_regressor(cfg.model, size, TASK)
        # Eagerly, here and in the new process: one step and one batch need no traced graph (8 models'
        # graphs cost ~1 min of the suite); the layers, weights and arithmetic are the same.
        model.compile(keras.optimizers.SGD(0.5), make_loss(cfg.model, TASK), run_eagerly=True)
        x = {"image": rng.integers(0, 256, (4, size, size, 3), dtype="uint8"),
             "metadata": rng.integers(0, 2, (4, len(META_COLUMNS))).astype("float32")}
        model.train_on_batch(x, np.linspace(1, 100, 4, dtype="float32"))
        paths[key] = str(save_fold_model(model, root / key / "fold_0"))
        np.savez(root / f"{key}_x.npz", **x)
        expected[key] = ops.convert_to_numpy(model(x, training=False))
        shutil.rmtree(folder)
    script = textwrap.dedent(f"""
        import numpy as np
        from keras import ops
        from lresizervit.models.fold_model import load_fold_model
        paths = {paths!r}
        out = {{}}
        for key, path in paths.items():
            x = dict(np.load({str(root)!r} + "/" + key + "_x.npz"))
            out[key] = ops.convert_to_numpy(load_fold_model(path)(x, training=False))
        np.savez({str(root / "reloaded.npz")!r}, **out)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(root / "reloaded.npz")
    return {key: (expected[key], got[key]) for key in expected}


@pytest.mark.slow  # a fresh process imports TensorFlow (~7 s): not in make test-fast
@pytest.mark.parametrize(("family", "size"), RELOADED)
def test_fold_files_reload_without_the_preset(reloaded, family, size):
    expected, got = reloaded[f"{family}_{size}"]
    assert expected.shape == (4, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_vit_size_comes_from_the_preset(tmp_path):
    # A "224" and a "384" preset: each takes its own size, read from its config, and nothing else.
    small = write_tiny_preset("vit", tmp_path / "vit_32", size=32)
    large = write_tiny_preset("vit", tmp_path / "vit_48", size=48)
    assert build_backbone("keras_hub:" + small, 32).output_shape == (None, 16)
    assert build_backbone("keras_hub:" + large, 48).output_shape == (None, 16)
    with pytest.raises(ValueError, match="model.resizer.target_size") as info:
        build_backbone("keras_hub:" + small, 48)
    message = str(info.value)
    assert "32x32" in message and "48x48" in message and "set model.resizer.target_size to 32" in message
    with pytest.raises(ValueError, match="set data.image_size to 48"):
        build_backbone("keras_hub:" + large, 32, size_key="data.image_size")
    # The regressor checks it when the model is built.
    with pytest.raises(ValueError, match="model.resizer.target_size"):
        build_regressor(_regressor_cfg("keras_hub:" + small, "bilinear", 16), 64, TASK)


def test_other_sizes_where_the_family_allows(presets):
    images = _pixels(_images(2, 48))
    for family in ("dinov2", "dinov3", "resnet"):
        backbone = build_backbone("keras_hub:" + presets[family], 48)
        assert backbone(images).shape == (2, 16), family
    # DINOv2: position embeddings are interpolated from the preset's grid, and frozen (see the next test).
    dinov2 = build_backbone("keras_hub:" + presets["dinov2"], 48)
    position = [v for v in dinov2.weights if "interpolated_position_embeddings" in v.path]
    assert position and position[0].shape == (1, (48 // 4) ** 2 + 1, 16)
    assert all(v is not position[0] for v in dinov2.trainable_weights)
    with pytest.raises(ValueError, match="model.resizer.target_size 30 is not divisible by the patch size 4"):
        build_backbone("keras_hub:" + presets["dinov2"], 30)
    for family in ("swin", "clip", "siglip"):
        with pytest.raises(ValueError, match="set model.resizer.target_size to 32"):
            build_backbone("keras_hub:" + presets[family], 48)


def test_keras_hub_drops_tuned_dinov2_position_embeddings_on_save(presets, tmp_path):
    # Documents why DINOv2's position embeddings are frozen: keras-hub saves a fine-tuned copy only when
    # sum(original - tuned) > 0. If this starts failing, keras-hub fixed it and the freeze may go.
    backbone = keras_hub.models.DINOV2Backbone.from_preset(presets["dinov2"])
    position = backbone.embeddings.interpolated_position_embeddings
    change = np.random.default_rng(0).normal(size=position.shape).astype("float32")
    position.assign(position + change - change.mean() + 0.01)  # a "tuned" copy whose change sums to > 0
    images = {"images": np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype("float32")}
    tuned = ops.convert_to_numpy(backbone(images))
    backbone.save_weights(tmp_path / "w.weights.h5")
    again = keras_hub.models.DINOV2Backbone.from_config(backbone.get_config())
    again.load_weights(tmp_path / "w.weights.h5")
    assert not np.allclose(ops.convert_to_numpy(again(images)), tuned, atol=1e-3)


def test_regressor_trains_a_real_step_with_a_keras_hub_vit(tmp_path):
    preset = write_tiny_preset("vit", tmp_path / "vit", size=16)
    cfg = _regressor_cfg("keras_hub:" + preset, "learned", 16)
    assert backbone_patch_size(cfg.backbone.name) is None  # the keras-hub builder checks sizes itself
    model = build_regressor(cfg, 32, TASK)
    backbone = model.get_layer("keras_hub_backbone")
    model.compile(keras.optimizers.AdamW(1e-3), make_loss(cfg, TASK))
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype="uint8"),
         "metadata": rng.integers(0, 2, (8, len(META_COLUMNS))).astype("float32")}
    y = rng.uniform(1, 100, (8, 1)).astype("float32")
    before = _backbone_state(backbone)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = _backbone_state(backbone)
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    pred = model.predict(x, verbose=0)
    assert pred.shape == (8, 1) and np.all((pred >= 0) & (pred <= 100))


def test_mixed_bfloat16_scales_in_float32(presets):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        cfg = _regressor_cfg("keras_hub:" + presets["dinov2"], "learned", 16)
        model = build_regressor(cfg, 32, TASK)
        backbone = model.get_layer("keras_hub_backbone")
        scaling = backbone.get_layer("preset_inputs")
        assert isinstance(scaling, PresetImageScaling) and scaling.compute_dtype == "float32"
        assert backbone.get_layer("dinov2_backbone").compute_dtype == "bfloat16"
        model.compile(keras.optimizers.AdamW(1e-3), make_loss(cfg, TASK))
        rng = np.random.default_rng(0)
        x = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype="uint8"),
             "metadata": np.zeros((4, len(META_COLUMNS)), "float32")}
        history = model.fit(x, rng.uniform(1, 100, (4, 1)).astype("float32"), batch_size=4, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network: every proxy points at a closed local port (refused at once); an empty kagglehub cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy", "KAGGLE_API_ENVIRONMENT", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    return tmp_path / "kagglehub"


def test_offline_preset_name_fails_fast_and_says_what_to_attach(offline):
    start = time.monotonic()
    with pytest.raises(BackboneUnavailableError) as info:
        build_backbone("keras_hub:vit_base_patch16_384_imagenet", 384)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)  # the CLI prints it as one `error:` line
    assert "model.backbone.name" in message
    assert "Kaggle Model keras/vit/keras/vit_base_patch16_384_imagenet " in message
    assert "'keras_hub:/kaggle/input/vit/keras/vit_base_patch16_384_imagenet/" in message


def test_a_preset_name_in_kagglehubs_cache_loads_offline(offline, presets):
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    # Where kagglehub would have downloaded the builtin preset's handle (a tiny stand-in).
    builtin = keras_hub.models.Backbone.presets["vit_base_patch16_224_imagenet"]["kaggle_handle"]
    handle = parse_model_handle(builtin.removeprefix("kaggle://"))
    shutil.copytree(presets["vit"], Cache().get_path(handle))
    Cache().mark_as_complete(handle)
    assert build_backbone("keras_hub:vit_base_patch16_224_imagenet", SIZE).output_shape == (None, 16)


def test_bad_specs_name_the_key_or_the_file(presets, tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone.name.*no folder.*not a keras-hub preset"):
        build_backbone(f"keras_hub:{tmp_path / 'nope'}", SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        build_backbone(f"keras_hub:{empty}", SIZE)
    no_converter = tmp_path / "no_converter"
    shutil.copytree(presets["vit"], no_converter)
    (no_converter / "image_converter.json").unlink()
    with pytest.raises(FileNotFoundError, match="holds no image_converter.json"):
        build_backbone(f"keras_hub:{no_converter}", SIZE)
    other = tmp_path / "other"
    shutil.copytree(presets["vit"], other)
    (other / "config.json").write_text('{"class_name": "BertBackbone", "config": {}}')
    with pytest.raises(ValueError, match="BertBackbone; supported families: ViT"):
        build_backbone(f"keras_hub:{other}", SIZE)
    with pytest.raises(ValueError, match="model.backbone.pooling"):
        build_backbone("keras_hub:" + presets["vit"], SIZE, pooling="gap")


def test_an_attached_preset_becomes_the_cached_copy_of_its_name(offline, presets, tmp_path, capsys):
    """What a Kaggle kernel does with the Kaggle Model attached to it: the config keeps naming the preset
    (keras_hub:vit_base_patch16_224_imagenet), and the name resolves to the mounted folder with no network."""
    from lresizervit.cli import main

    builtin = keras_hub.models.Backbone.presets["vit_base_patch16_224_imagenet"]["kaggle_handle"]
    mounted = tmp_path / "input" / "models" / "vit"
    shutil.copytree(presets["vit"], mounted)
    assert main(["weights", "cache", builtin.removeprefix("kaggle://"), str(mounted)]) == 0
    assert "now loads it offline" in capsys.readouterr().out
    assert build_backbone("keras_hub:vit_base_patch16_224_imagenet", SIZE).output_shape == (None, 16)
    assert main(["weights", "cache", builtin.removeprefix("kaggle://"), str(mounted)]) == 0  # again: kept
    assert main(["weights", "cache", "keras/vit/keras/vit_base_patch16_224_imagenet", str(mounted)]) == 2
    assert "has no version" in capsys.readouterr().err
    assert main(["weights", "cache", builtin.removeprefix("kaggle://"), str(tmp_path)]) == 2
    assert "holds no config.json" in capsys.readouterr().err
