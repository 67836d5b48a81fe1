"""The whole model: pixels → resizer → backbone → (+ metadata MLP) → head → the target.

Everything outside the model is in the target's units (the task's `target_range`, e.g. Pawpularity 1..100):
labels, predictions and the RMSE metric. The scaling to 0..1 of the BCE trick lives inside the losses
below, so no caller can read a 0..1 number as a score.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from lresizervit.config import ModelConfig
from lresizervit.models.backbones import backbone_patch_size, build_backbone
from lresizervit.models.resizer import ConvAfterResize, FixedResize, LearnableResizer
from lresizervit.task import Task


class _RangeLoss(keras.losses.Loss):
    """A loss on the 0..1 scale: y -> (y - lo) / (hi - lo) for labels and predictions alike."""

    def __init__(self, lo: float, hi: float, **kwargs):
        # A mean over the rows' weights: without weights the plain mean; with the zero-weight rows that pad a
        # validation batch on JAX (training/placement.py), the mean over the real rows only.
        kwargs.setdefault("reduction", "mean_with_sample_weight")
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def _unit(self, y, shape):
        return (ops.cast(ops.reshape(y, shape), "float32") - self.lo) / (self.hi - self.lo)

    def get_config(self):
        return {**super().get_config(), "lo": self.lo, "hi": self.hi}


@keras.saving.register_keras_serializable(package="lresizervit")
class RangeBCE(_RangeLoss):
    """BCE on the target scaled to 0..1 against the sigmoid head's output (scaled back the same way): the
    winning Pawpularity teams' loss."""

    def __init__(self, lo: float, hi: float, label_smoothing: float = 0.0, name: str = "range_bce", **kwargs):
        super().__init__(lo, hi, name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return keras.losses.binary_crossentropy(self._unit(y_true, (-1, 1)), self._unit(y_pred, (-1, 1)),
                                                label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="lresizervit")
class RangeMSE(_RangeLoss):
    """MSE on the 0..1 scale (same optimum as in the target's units, gradients of a sane size)."""

    def __init__(self, lo: float, hi: float, name: str = "range_mse", **kwargs):
        super().__init__(lo, hi, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return ops.square(self._unit(y_true, (-1,)) - self._unit(y_pred, (-1,)))


def make_loss(cfg: ModelConfig, task: Task) -> keras.losses.Loss:
    if cfg.loss == "bce":
        return RangeBCE(task.lo, task.hi, cfg.label_smoothing)
    if cfg.loss == "mse":
        return RangeMSE(task.lo, task.hi)
    raise ValueError(f"model.loss must be 'bce' or 'mse', got {cfg.loss!r}")


def metadata_stats(train_df, task: Task) -> tuple[list[float], list[float]] | None:
    """(mean, variance) per metadata column from the fold's training rows, for the model to standardise
    with; 0/1 columns get (0, 1), i.e. pass as they are. None when every column is 0/1 (the model then has
    no standardisation layer at all, exactly as before non-binary metadata existed)."""
    cols = task.metadata_columns
    if not cols:
        return None
    values = train_df[cols].to_numpy(np.float64)
    binary = np.isin(values, (0.0, 1.0)).all(axis=0)
    if binary.all():
        return None
    mean = np.where(binary, 0.0, values.mean(axis=0))
    # A constant column has variance 0: dividing by it would turn any new value into inf.
    var = np.where(binary, 1.0, np.maximum(values.var(axis=0), 1e-12))
    return mean.tolist(), var.tolist()


@keras.saving.register_keras_serializable(package="lresizervit")
class BranchDropout(layers.Layer):
    """While training, zero a sample's whole input vector with probability `rate` (no rescaling: zero
    means "absent", as for a photo that comes without metadata)."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = keras.random.uniform((ops.shape(x)[0], 1), seed=self.seed_generator) >= self.rate
        return x * ops.cast(keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def build_regressor(cfg: ModelConfig, image_size: int, task: Task,
                    metadata_stats: tuple[list[float], list[float]] | None = None,
                    target_mean: float | None = None, backbone_architecture: dict | None = None) -> keras.Model:
    """Inputs: {"image": uint8 [B, S, S, 3], "metadata": float32 [B, M]}; output: the target [B, 1].

    M is the task's number of metadata columns. `metadata_stats` (see `metadata_stats`) standardise
    non-binary columns inside the model, so prediction needs nothing else; `target_mean` (the fold's) is
    where the MSE head starts. The layer named "embeddings" holds the fused features before the head.
    `backbone_architecture` builds a keras-hub backbone without its preset folder (models/fold_model.py).
    """
    rc = cfg.resizer
    patch = backbone_patch_size(cfg.backbone.name)
    backbone_size = image_size if rc.mode == "none" else rc.target_size
    key = "data.image_size" if rc.mode == "none" else "model.resizer.target_size"
    if patch is not None and backbone_size % patch:
        raise ValueError(
            f"{key} {backbone_size} is not divisible by the patch size {patch} of backbone {cfg.backbone.name!r}"
        )
    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    metadata = keras.Input((len(task.metadata_columns),), dtype="float32", name="metadata")

    # Pixels arrive as uint8 (4x smaller tf.data buffers); scale to [-1, 1] here, the range TF-Hub ViTs expect.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")(ops.cast(image, "float32"))
    if rc.mode in ("learned", "conv_after_resize"):
        # conv_after_resize: the same layers and weights, applied after a plain resize (an ablation control).
        cls = LearnableResizer if rc.mode == "learned" else ConvAfterResize
        x = cls(
            rc.target_size, filters=rc.filters, num_res_blocks=rc.num_res_blocks,
            interpolation=rc.interpolation, first_kernel_size=rc.kernel_size, patch_size=patch,
            zero_init_output=rc.zero_init_output, clip_output=rc.clip_output, name="resizer",
        )(x)
    elif rc.mode == "bilinear":
        x = FixedResize(rc.target_size, interpolation=rc.interpolation, name="resizer")(x)
    elif rc.mode != "none":
        raise ValueError(f"model.resizer.mode must be 'learned', 'bilinear', 'none' or 'conv_after_resize', "
                         f"got {rc.mode!r}")

    backbone = build_backbone(cfg.backbone.name, backbone_size, pooling=cfg.backbone.pooling,
                              dropout=cfg.backbone.dropout, size_key=key, architecture=backbone_architecture)
    features = backbone(x)
    if cfg.fusion == "concat":
        m = metadata
        if metadata_stats is not None:
            mean, var = metadata_stats
            m = layers.Normalization(mean=mean, variance=var, name="metadata_standardise")(m)
        m = BranchDropout(cfg.metadata_dropout, name="metadata_dropout")(m)
        m = layers.Dense(cfg.metadata_units, activation="gelu", name="metadata_mlp")(m)
        features = layers.Concatenate(name="fuse")([ops.cast(features, m.dtype), m])
    elif cfg.fusion != "none":
        raise ValueError(f"model.fusion must be 'concat' or 'none', got {cfg.fusion!r}")
    features = layers.Identity(name="embeddings")(features)
    features = layers.Dropout(cfg.head_dropout, name="head_dropout")(features)
    h = layers.Dense(cfg.head_units, activation="gelu", name="head_hidden")(features)
    # The head's output and everything after it stay float32 under mixed precision: a sigmoid near 0 or 1
    # and the BCE of it lose too much in 8 bits of mantissa.
    if cfg.loss == "bce":
        out = layers.Dense(1, activation="sigmoid", name="head_out", dtype="float32")(h)
    else:
        # Start at the training rows' mean (on the 0..1 scale) so early epochs are not spent finding it.
        start = 0.5 if target_mean is None else (target_mean - task.lo) / (task.hi - task.lo)
        out = layers.Dense(1, bias_initializer=keras.initializers.Constant(start), name="head_out",
                           dtype="float32")(h)
    # Back from 0..1 to the target's units: lo + (hi - lo) * x.
    out = layers.Rescaling(task.hi - task.lo, offset=task.lo, name="target", dtype="float32")(out)
    return keras.Model({"image": image, "metadata": metadata}, out, name="lresizervit")


# The layers that start from scratch around the backbone; every other layer with weights is the backbone.
NEW_LAYERS = ("scale_pixels", "resizer", "metadata_standardise", "metadata_dropout", "metadata_mlp", "fuse",
              "embeddings", "head_dropout", "head_hidden", "head_out", "target")


def backbone_variables(model: keras.Model) -> list:
    """The backbone's trainable variables (what fine-tuning gives its own learning rate)."""
    return [v for layer in model.layers if layer.name not in NEW_LAYERS for v in layer.trainable_variables]


def embedding_model(model: keras.Model) -> keras.Model:
    """The same inputs → the fused features before the head (for an SVR head on embeddings)."""
    return keras.Model(model.inputs, model.get_layer("embeddings").output, name="lresizervit_embeddings")
