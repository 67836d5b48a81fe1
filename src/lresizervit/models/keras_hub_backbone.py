"""keras-hub presets as pretrained backbones behind the resizer: `model.backbone.name: "keras_hub:<preset>"`.

`<preset>` is either
- a local preset folder, the one holding `config.json` (written by keras-hub's `save_to_preset`, or a Kaggle
  Model attached to a notebook: `keras_hub:/kaggle/input/vit/keras/vit_base_patch16_384_imagenet/4`); or
- a keras-hub preset name (`vit_base_patch16_384_imagenet`) or Kaggle handle (`kaggle://owner/model/keras/
  variant[/version]`), downloaded by kagglehub into its cache. Offline, a name fails within seconds with a
  `BackboneUnavailableError` that says which Kaggle Model to attach and how to point the key at it.

The backbone sees exactly what it was pretrained on: the resizer works on pixels in [-1, 1], and the
`PresetImageScaling` layer maps them back to [0, 255] and applies the preset's own image converter
(`image_converter.json`: `scale` and `offset`, scalar or per channel, the converter's `x * scale + offset`).

Each family is turned into `[B, D]` features by one declared rule:

| family (keras-hub class)          | pooled feature                                      | other sizes      |
|-----------------------------------|-----------------------------------------------------|------------------|
| ViT (`ViTBackbone`)               | class token, after the final LayerNorm (1)          | no (2)           |
| Swin (`SwinTransformerBackbone`)  | mean of all tokens, after the final LayerNorm       | no (3)           |
| DINOv2 (`DINOV2Backbone`)         | class token, after the final LayerNorm              | patch multiples  |
| DINOv3 (`DINOV3Backbone`)         | class token, after the final LayerNorm              | patch multiples  |
| CLIP (`CLIPBackbone`)             | vision tower's class token, after its LayerNorm (4) | no (2)           |
| SigLIP (`SigLIPBackbone`)         | vision tower's pretrained attention-pooling head    | no (2)           |
| ResNet (`ResNetBackbone`)         | global average pool of the last feature map         | any              |

(1) the mean of the tokens for a preset without a class token; (2) learned position embeddings, which
keras-hub does not interpolate; (3) attention windows and shift masks are built for the preset's size;
(4) CLIP's projection is dropped, as is the text tower of CLIP and SigLIP (not kept, not saved).
"patch multiples" and "any": the preset is rebuilt at `model.resizer.target_size` (DINOv2 interpolates its
position embeddings, bicubic, and keeps them frozen; DINOv3's are rotary). "no": `model.resizer.target_size`
must equal the preset's size, checked when the model is built. With keras-hub < 0.32, Swin trains without
stochastic depth (see `_swin_overrides`).

Saving: the backbone is a plain Keras layer inside the model, so a `.keras` file holds its (fine-tuned)
weights and reloads with `safe_mode=True` and without the preset folder. keras-hub classes are imported by
Keras itself on reload; this module's layers are registered when `lresizervit.models.backbones` is imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from types import MappingProxyType

import keras
import numpy as np
from keras import layers, ops

# Finding a preset's folder needs no Keras (`weights check` and `weights fetch` stay cheap): preset_files.py.
from lresizervit.models.preset_files import (  # noqa: F401
    BACKBONE_KEY,
    BLANK_MARKER,
    KAGGLE_INPUT_DIR,
    KERAS_HUB_PREFIX,
    PRESET_CONFIG_FILE,
    blank_weights_warning,
    is_keras_hub_spec,
    resolve_preset,
)

IMAGE_CONVERTER_FILE = "image_converter.json"

POOLING_RULES = ("class_token", "mean_tokens", "global_average")


@dataclass(frozen=True)
class Family:
    name: str
    # How tokens or feature maps become one vector: a POOLING_RULES entry, or None when the model's own
    # output is already pooled (SigLIP's attention-pooling head).
    pooling: str | None
    # "preset": only the preset's size; "patch_multiple": rebuilt at any multiple of the patch size;
    # "any": any size, when the preset's input shape leaves height and width open.
    sizes: str
    # Why a preset of this family takes only its own size (said in the size error).
    fixed_because: str = "its position embeddings are learned for that size"
    # An image-text model: keep its `vision_encoder`.
    vision_tower: bool = False


FAMILIES = MappingProxyType({
    "ViTBackbone": Family("ViT", "class_token", "preset", "its position embeddings are learned for that "
                          "size and keras-hub does not interpolate them"),
    "SwinTransformerBackbone": Family("Swin", "mean_tokens", "preset", "its attention windows and shift "
                                      "masks are built for that size"),
    "DINOV2Backbone": Family("DINOv2", "class_token", "patch_multiple"),
    "DINOV3Backbone": Family("DINOv3", "class_token", "patch_multiple"),
    "CLIPBackbone": Family("CLIP", "class_token", "preset", vision_tower=True),
    "SigLIPBackbone": Family("SigLIP", None, "preset", vision_tower=True),
    "ResNetBackbone": Family("ResNet", "global_average", "any", "its preset fixes the input shape"),
})


@keras.saving.register_keras_serializable(package="lresizervit")
class PresetImageScaling(layers.Layer):
    """Pixels in [-1, 1] (the resizer's output) → the preset's input: `(x + 1) * 127.5 * scale + offset`.

    `scale` and `offset` are the preset image converter's, which it applies to [0, 255] pixels; each is one
    float per channel. Computes in float32 whatever the dtype policy: bfloat16 keeps 8 bits of mantissa, so
    the normalised pixels would be off by up to 0.4 % before the backbone sees them.
    """

    def __init__(self, scale, offset, dtype=None, **kwargs):
        super().__init__(dtype="float32" if dtype is None else dtype, **kwargs)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]
        if len(self.scale) != 3 or len(self.offset) != 3:
            raise ValueError(f"scale and offset need one value per RGB channel, got {scale!r} and {offset!r}")

    def call(self, x):
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        return (ops.cast(x, self.compute_dtype) + 1.0) * (127.5 * scale) + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="lresizervit")
class FeaturePooling(layers.Layer):
    """`[B, T, D]` tokens or `[B, H, W, D]` maps → `[B, D]`: "class_token" (token 0), "mean_tokens" (mean over
    all tokens) or "global_average" (mean over height and width)."""

    def __init__(self, rule: str, **kwargs):
        super().__init__(**kwargs)
        if rule not in POOLING_RULES:
            raise ValueError(f"pooling rule must be one of {POOLING_RULES}, got {rule!r}")
        self.rule = rule

    def call(self, x):
        if self.rule == "class_token":
            return x[:, 0]
        if self.rule == "mean_tokens":
            return ops.mean(x, axis=1)
        return ops.mean(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "rule": self.rule}


def _read_json(path: str, spec: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"backbone {spec!r}: cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"backbone {spec!r}: {path} is not a JSON object")
    return value


def preset_family(folder: str, spec: str) -> tuple[str, Family, dict]:
    """(class name, family, the backbone's constructor arguments) from the preset's config.json."""
    path = os.path.join(folder, PRESET_CONFIG_FILE)
    config = _read_json(path, spec)
    class_name = config.get("class_name")
    if class_name is None:
        raise ValueError(
            f"backbone {spec!r}: {path} is not a Keras preset (no class_name; Hugging Face or timm folders "
            "are not supported): write one with keras-hub's save_to_preset"
        )
    if class_name not in FAMILIES:
        raise ValueError(
            f"backbone {spec!r} is a keras-hub {class_name}; supported families: "
            + ", ".join(f"{f.name} ({c})" for c, f in FAMILIES.items())
        )
    return class_name, FAMILIES[class_name], config.get("config", {})


def preset_scale_offset(folder: str, spec: str) -> tuple[list[float], list[float]]:
    """The preset image converter's per-channel (scale, offset), which it applies to [0, 255] pixels."""
    import keras_hub

    if not os.path.isfile(os.path.join(folder, IMAGE_CONVERTER_FILE)):
        raise FileNotFoundError(
            f"backbone {spec!r}: preset folder {folder!r} holds no {IMAGE_CONVERTER_FILE}, so the input "
            "scale the backbone was trained with is unknown; save the preset's ImageConverter with "
            "save_to_preset"
        )
    # Loaded by keras-hub itself so that its legacy fields (mean, variance) are converted as it does.
    converter = keras_hub.layers.ImageConverter.from_preset(folder)

    def per_channel(value, default: float) -> list[float]:
        if value is None:
            return [default] * 3
        values = [float(v) for v in np.asarray(value, dtype="float64").reshape(-1)]
        if len(values) == 1:
            return values * 3
        if len(values) != 3:
            raise ValueError(f"backbone {spec!r}: image converter value {value!r} is neither one float nor 3")
        return values

    return per_channel(converter.scale, 1.0), per_channel(converter.offset, 0.0)


def _preset_size(family: Family, config: dict) -> tuple[int | None, int | None]:
    shape_config = config["vision_encoder"]["config"] if family.vision_tower else config
    shape = shape_config.get("image_shape")
    if not shape or len(shape) != 3:
        return None, None
    return shape[0], shape[1]


def _check_size(spec: str, family: Family, config: dict, image_size: int, size_key: str) -> dict:
    """Raise unless the family can run at `image_size`; returns the from_preset overrides that make it."""
    height, width = _preset_size(family, config)
    if family.sizes == "any" and height is None and width is None:
        return {}
    if family.sizes == "patch_multiple":
        patch = int(config["patch_size"])
        if image_size % patch:
            raise ValueError(
                f"{size_key} {image_size} is not divisible by the patch size {patch} of backbone {spec!r}"
            )
        if (height, width) == (image_size, image_size):
            return {}
        return {"image_shape": (image_size, image_size, 3)}
    if (height, width) != (image_size, image_size):
        raise ValueError(
            f"backbone {spec!r} takes {height}x{width} images ({family.fixed_because}) but is given "
            f"{image_size}x{image_size}: set {size_key} to {height}"
        )
    return {}


def _swin_overrides() -> dict:
    import keras_hub

    # keras-hub < 0.32's Swin DropPath calls `keras.ops.random` (which does not exist) and draws a 4-D mask
    # for 3-D tokens: a Swin preset with stochastic depth (drop_path > 0, its default 0.1) cannot train a
    # single step. Without it, it trains; 0.32 fixes both, but needs kagglesdk 0.1.28 (see pyproject.toml).
    major, minor = (int(p) for p in keras_hub.__version__.split(".")[:2])
    return {"drop_path": 0.0} if (major, minor) < (0, 32) else {}


def _freeze_dinov2_position_embeddings(backbone) -> None:
    # keras-hub (0.29.1, still in 0.32.0) writes fine-tuned DINOv2 position embeddings back into the saved
    # ones only when sum(original - tuned) > epsilon: a change with a positive sum is dropped on save (and
    # reload re-derives them from the stale ones), so a saved model would predict differently. Frozen, they
    # reload exactly.
    backbone.embeddings.interpolated_position_embeddings.trainable = False


# The keras-hub classes a saved architecture may name (`architecture["class_name"]`): the families' backbones
# and the vision towers kept of the image-text ones. A name outside this set is refused, not looked up.
PART_CLASSES = frozenset({*FAMILIES, "CLIPVisionEncoder", "SigLIPVisionEncoder"})


def build_keras_hub_backbone(
    spec: str, image_size: int, size_key: str, name: str = "keras_hub_backbone", architecture: dict | None = None
) -> keras.Model:
    """`keras_hub:<preset>` → a fine-tunable backbone: float32 `[B, S, S, 3]` in [-1, 1] → `[B, D]` features.

    `size_key` is the config key that sets `image_size` (named in size errors). With `architecture` (what
    `backbone_architecture` read off a trained model: the keras-hub part's class and constructor arguments,
    the input scaling and the pooling rule) the same layers are built from it with random weights and no
    preset folder: a saved fold's weights are loaded into them next.
    """
    import keras_hub

    if not is_keras_hub_spec(spec):
        raise ValueError(f"backbone {spec!r} does not start with {KERAS_HUB_PREFIX!r}")
    if architecture is not None:
        class_name = architecture["class_name"]
        if class_name not in PART_CLASSES:
            raise ValueError(f"backbone {spec!r}: a saved architecture names the keras-hub class {class_name!r}, "
                             f"not one of {sorted(PART_CLASSES)}")
        cls = getattr(keras_hub.models, class_name, None)
        if cls is None:
            raise ValueError(f"backbone {spec!r} is a keras-hub {class_name}, which keras-hub "
                             f"{keras_hub.__version__} does not have (Swin needs 0.29.1 or newer)")
        model = cls.from_config(dict(architecture["config"]))
        scale, offset, pooling = architecture["scale"], architecture["offset"], architecture["pooling"]
    else:
        folder = resolve_preset(spec[len(KERAS_HUB_PREFIX):])
        warning = blank_weights_warning(folder)
        if warning:
            print(warning, flush=True)
        class_name, family, config = preset_family(folder, spec)
        if class_name == "ViTBackbone" and not config.get("use_class_token", True):
            family = dataclasses.replace(family, pooling="mean_tokens")
        overrides = _check_size(spec, family, config, image_size, size_key)
        scale, offset = preset_scale_offset(folder, spec)
        pooling = family.pooling

        if class_name == "SwinTransformerBackbone":
            overrides.update(_swin_overrides())
        # from_preset merges keyword arguments into the preset's config before building.
        model = keras_hub.models.Backbone.from_preset(folder, **overrides)
        if family.vision_tower:
            model = model.vision_encoder
    if type(model).__name__ == "DINOV2Backbone":
        _freeze_dinov2_position_embeddings(model)
    if type(model).__name__ in ("DINOV2Backbone", "DINOV3Backbone") and model.embeddings.use_mask_token:
        # Used only by masked-image pretraining: it never gets a gradient here (the optimizer would warn).
        model.embeddings.mask_token.trainable = False

    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    x = PresetImageScaling(scale, offset, name="preset_inputs")(inputs)
    # DINO, CLIP and SigLIP take a dict of one image input; ViT, Swin and ResNet a tensor.
    if isinstance(model.input, dict):
        (input_name,) = model.input
        x = {input_name: x}
    features = model(x)
    if isinstance(features, dict):  # CLIP built with an intermediate output
        features = features["sequence_output"]
    if pooling is not None:
        features = FeaturePooling(pooling, name="pooling")(features)
    if len(features.shape) != 2:
        raise ValueError(f"backbone {spec!r} gives features of shape {tuple(features.shape)}, not [B, D]")
    return keras.Model(inputs, features, name=name)


def backbone_architecture(backbone: keras.Model) -> dict:
    """What `build_keras_hub_backbone(..., architecture=)` needs to build `backbone` (one it built) again
    without its preset folder: plain JSON data, read off the layers themselves, so a model loaded from any
    file describes itself the same way as one just built from a preset."""
    scaling = backbone.get_layer("preset_inputs")
    parts = [layer for layer in backbone.layers if type(layer).__name__ in PART_CLASSES]
    if len(parts) != 1:
        raise ValueError(f"{backbone.name}: expected one keras-hub backbone inside, found "
                         f"{[type(layer).__name__ for layer in parts]}")
    try:
        pooling = backbone.get_layer("pooling").rule
    except ValueError:
        pooling = None
    # Through JSON: tuples become lists, as they will be when read back.
    return json.loads(json.dumps({
        "class_name": type(parts[0]).__name__, "config": parts[0].get_config(),
        "scale": scaling.scale, "offset": scaling.offset, "pooling": pooling,
    }))
