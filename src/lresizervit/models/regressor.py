"""The whole model: pixels → resizer → ViT → (+ metadata MLP) → head → Pawpularity.

Everything outside the model is in Pawpularity units (1..100): labels, predictions and the RMSE metric.
The /100 of the BCE trick lives inside the losses below, so no caller can read a 0..1 number as a score.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from lresizervit.config import ModelConfig
from lresizervit.data.schema import META_COLUMNS
from lresizervit.models.resizer import FixedResize, LearnableResizer
from lresizervit.models.vit import build_vit, get_vit_spec

TARGET_SCALE = 100.0


@keras.saving.register_keras_serializable(package="lresizervit")
def pawpularity_bce(y_true, y_pred):
    """BCE on Pawpularity/100 against the sigmoid head's output (also /100): the winning teams' loss."""
    y_true = ops.cast(ops.reshape(y_true, (-1,)), "float32") / TARGET_SCALE
    y_pred = ops.cast(ops.reshape(y_pred, (-1,)), "float32") / TARGET_SCALE
    return keras.losses.binary_crossentropy(y_true[:, None], y_pred[:, None])


@keras.saving.register_keras_serializable(package="lresizervit")
def pawpularity_mse(y_true, y_pred):
    """MSE on the 0..1 scale (same optimum as on 1..100, gradients of a sane size)."""
    y_true = ops.cast(ops.reshape(y_true, (-1,)), "float32") / TARGET_SCALE
    y_pred = ops.cast(ops.reshape(y_pred, (-1,)), "float32") / TARGET_SCALE
    return ops.square(y_true - y_pred)


LOSSES = {"bce": pawpularity_bce, "mse": pawpularity_mse}


def build_regressor(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Inputs: {"image": uint8 [B, S, S, 3], "metadata": float32 [B, 12]}; output: Pawpularity [B, 1]."""
    spec = get_vit_spec(cfg.backbone.name)
    target = cfg.resizer.target_size
    if target % spec.patch_size:
        raise ValueError(
            f"model.resizer.target_size {target} is not divisible by the patch size {spec.patch_size} "
            f"of backbone {cfg.backbone.name!r}"
        )
    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    metadata = keras.Input((len(META_COLUMNS),), dtype="float32", name="metadata")

    # Pixels arrive as uint8 (4x smaller tf.data buffers); scale to [-1, 1] here, the range TF-Hub ViTs expect.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")(ops.cast(image, "float32"))
    if cfg.resizer.mode == "learned":
        x = LearnableResizer(
            target, filters=cfg.resizer.filters, num_res_blocks=cfg.resizer.num_res_blocks,
            interpolation=cfg.resizer.interpolation, patch_size=spec.patch_size, name="resizer",
        )(x)
    elif cfg.resizer.mode == "bilinear":
        x = FixedResize(target, interpolation=cfg.resizer.interpolation, name="resizer")(x)
    else:
        raise ValueError(f"model.resizer.mode must be 'learned' or 'bilinear', got {cfg.resizer.mode!r}")

    backbone = build_vit(cfg.backbone.name, target, pooling=cfg.backbone.pooling, dropout=cfg.backbone.dropout)
    features = backbone(x)
    if cfg.metadata_units > 0:
        m = layers.Dense(cfg.metadata_units, activation="gelu", name="metadata_mlp")(metadata)
        features = layers.Concatenate(name="fuse")([features, m])
    features = layers.Dropout(cfg.head_dropout, name="head_dropout")(features)
    h = layers.Dense(cfg.head_units, activation="gelu", name="head_hidden")(features)
    if cfg.loss == "bce":
        out = layers.Dense(1, activation="sigmoid", name="head_out")(h)
    else:
        # Start at the competition's mean (0.38 on the 0..1 scale) so early epochs are not spent finding it.
        out = layers.Dense(1, bias_initializer=keras.initializers.Constant(0.38), name="head_out")(h)
    out = layers.Rescaling(TARGET_SCALE, name="pawpularity")(out)
    return keras.Model({"image": image, "metadata": metadata}, out, name="lresizervit")


def load_model(path) -> keras.Model:
    """Reload a saved fold model for inference: only this package is needed for its custom layers."""
    return keras.saving.load_model(path, compile=False)
