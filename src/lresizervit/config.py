"""Typed experiment config: dataclasses are the schema and the documentation, the YAML is data.

Loading rules: an unknown key, a value of the wrong type or a missing file is a `ConfigError` that names
the key and the file. `--set section.key=value` overrides are parsed as YAML scalars and checked the same way.
The resolved config is saved with every run (`models/<exp>/config.yaml`) and prediction rebuilds from it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lresizervit.task import Task


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


@dataclass
class DataConfig:
    # Competition folder: train.csv, test.csv, train/{Id}.jpg, test/{Id}.jpg (Kaggle's layout).
    dir: str = "input/petfinder-pawpularity-score"
    # Written once by `lresizervit folds`; training reads the fold count from this file.
    folds_csv: str = "folds/train_folds.csv"
    # Number of folds the splitter writes (training never reads this: it counts the folds in folds_csv).
    n_folds: int = 5
    # Seed of the stratified split.
    fold_seed: int = 42
    # Keep every group of duplicate photos (the same picture under several Ids, found by a perceptual hash
    # of every train image: README, check-data) in one fold, so no photo is validated on its own copy.
    # false: plain stratified folds, no hash pass.
    group_duplicates: bool = True
    # Replace each group of duplicate photos by one row: its first row's Id, image and metadata, with the
    # group's mean target (rounded for an integer target). The other rows are left out of the folds file.
    merge_duplicates: bool = False
    # Photos are decoded and resized so their shorter side is this many pixels: the model's input size.
    image_size: int = 512
    # Keep decoded images in memory after the first epoch: they are kept uncropped, shorter side at
    # image_size, so ~4 * N * image_size^2 bytes for 4:3 photos.
    cache: bool = False
    # Train from pre-resized TFRecords instead of the photos (write them once with
    # `python -m lresizervit tfrecords`). Needed on TPU; faster anywhere: decoding is the loader's main cost.
    tfrecords: bool = False
    # "" = <dir>/tfrecords_<image_size>; on Kaggle data.dir is read-only: use /kaggle/working/tfrecords_512.
    tfrecords_dir: str = ""
    # With tfrecords: TF-only augmentations (same augment.* probabilities) instead of albumentations, for
    # hosts where tf.numpy_function cannot run (TPU input workers).
    pure_tf_augment: bool = False


@dataclass
class AugmentConfig:
    # Train-time random square crop covers this fraction of the square image's area at least.
    crop_scale_min: float = 0.6
    # Probability of a horizontal flip.
    hflip_p: float = 0.5
    # Probability of a colour jitter (brightness, contrast, saturation ±0.2, hue ±0.02).
    color_jitter_p: float = 0.5
    # Probability of 1-4 black holes, each 5-15 % of the image's side.
    coarse_dropout_p: float = 0.3


@dataclass
class ResizerConfig:
    # "learned": the Talebi & Milanfar resizer; "bilinear": a fixed resize to target_size (the paper's
    # baseline); "none": no resize, the backbone sees data.image_size itself (the cost the resizer avoids);
    # "conv_after_resize": an ablation control, the plain resize then the resizer's own layers at target_size
    # (same parameters as "learned", no full-resolution view).
    mode: str = "learned"
    # Size the backbone sees; must be divisible by the backbone's patch size.
    target_size: int = 224
    # Feature maps of the resizer's convolutions (the paper uses 16).
    filters: int = 16
    # Residual blocks, each fed by the previous one (the paper uses 1 or 2).
    num_res_blocks: int = 1
    # Interpolation of the resize inside the resizer and of its skip path. "area" only with mode "bilinear"
    # on TensorFlow: it has no gradient there and no JAX resize, so the learned resizer cannot train through it.
    interpolation: str = "bilinear"
    # Kernel of the resizer's first and last convolution (7 in the paper).
    kernel_size: int = 7
    # Start as exactly the plain resize (last convolution initialised to 0): a pretrained backbone then
    # first sees the images it was trained on.
    zero_init_output: bool = False
    # Clip the output to [-1, 1], the input range of pretrained TF-Hub ViTs (the residual is unbounded).
    clip_output: bool = False


@dataclass
class BackboneConfig:
    # A native ViT from the registry (vit_tiny_demo, vit_micro, vit_ti16, vit_s16, vit_b16, vit_b8, vit_l16),
    # a pretrained keras-hub preset: "keras_hub:<preset folder or name>", or a pretrained SavedModel:
    # "savedmodel:/local/dir" or "hub:<TF-Hub / Kaggle Models handle>".
    name: str = "vit_b16"
    # Pool tokens with the class token ("cls") or by averaging them ("gap").
    pooling: str = "cls"
    # Dropout inside the transformer blocks.
    dropout: float = 0.0


@dataclass
class ModelConfig:
    # The learnable resizer (Talebi & Milanfar 2021) between the photo and the backbone.
    resizer: ResizerConfig = field(default_factory=ResizerConfig)
    # The image model behind the resizer: a native ViT, a keras-hub preset or a SavedModel.
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # "concat": an MLP over task.metadata_columns, concatenated with the image features; "none": image
    # only (required when there are no metadata columns; the host says production photos carry none).
    fusion: str = "concat"
    # Width of the metadata MLP.
    metadata_units: int = 32
    # Probability of zeroing a sample's whole metadata vector while training, so the model also copes
    # without it.
    metadata_dropout: float = 0.0
    # Width of the hidden layer of the head over the fused features.
    head_units: int = 128
    # Dropout on the fused features before the head.
    head_dropout: float = 0.1
    # "bce": sigmoid output, BCE on (y - lo) / (hi - lo) for task.target_range [lo, hi] (the competition's
    # winning trick, on Pawpularity / 100); "mse": linear output, MSE on the same scale.
    loss: str = "bce"
    # BCE only: the scaled target t becomes t * (1 - s) + s / 2.
    label_smoothing: float = 0.0


@dataclass
class TrainConfig:
    # Epochs per fold (fewer with patience).
    epochs: int = 10
    # Batch size per replica: the global batch is this times the replicas of train.strategy.
    batch_size: int = 16
    # Peak learning rate of AdamW, reached after the warmup, then cosine-decayed to 0. With
    # backbone_learning_rate set, this is the rate of the new layers (resizer, metadata branch, head).
    learning_rate: float = 1e-4
    # Fine-tuning a pretrained backbone: its peak learning rate (null = learning_rate: one rate for all).
    backbone_learning_rate: float | None = None
    # Layer-wise learning-rate decay inside the backbone: block i of L (from the input) gets
    # backbone_learning_rate * layer_decay ** (L + 1 - i), embeddings the smallest; 1.0 = off.
    layer_decay: float = 1.0
    # Epochs in which only the new layers learn (the backbone's learning rate is 0), before it is unfrozen.
    freeze_backbone_epochs: int = 0
    # AdamW's decoupled weight decay; biases, norms, the class token and position embeddings get none.
    weight_decay: float = 0.05
    # Fraction of all training steps spent warming up linearly from 0.
    warmup_fraction: float = 0.1
    # Seed of weights, shuffling and augmentation.
    seed: int = 42
    # Print one line per epoch (0) or a progress bar (1).
    verbose: int = 0
    # "float32", "mixed_bfloat16" (CPU, TPU, recent GPUs) or "mixed_float16" (GPUs; loss scaling is
    # automatic). The head and the loss stay float32.
    precision: str = "float32"
    # The Keras backend: "auto" (whatever Keras starts with: KERAS_BACKEND, else ~/.keras/keras.json, else
    # TensorFlow), "tensorflow" or "jax" (TPU v5e on Kaggle, several GPUs). Trained models load on either.
    backend: str = "auto"
    # "auto" (TPU → several GPUs → one GPU → CPU), "default" (one device), "mirrored", "tpu" or
    # "multi_worker" (from TF_CONFIG, TensorFlow only). batch_size is per replica; the learning rate scales
    # with replicas. On JAX, auto/mirrored/tpu shard each batch over every local device (DataParallel).
    strategy: str = "auto"
    # Stop a fold when val RMSE has not improved for this many epochs (0 = never).
    patience: int = 0
    # Clip the global gradient norm to this value (0 = no clipping).
    clip_norm: float = 0.0
    # Write TensorBoard logs to models/<exp>/fold_<k>/logs.
    tensorboard: bool = True
    # Bit-reproducible training: deterministic TF ops and a single-threaded loader (slower, see README).
    deterministic: bool = False
    # Keep an exponential moving average (EMA) of the weights in the optimizer; validation, early stopping,
    # the saved best model and the OOF use the averaged weights. Its horizon is ~1 / (1 - ema_momentum)
    # steps: keep it well below the steps of a whole run.
    ema: bool = False
    # The EMA's decay per step, in (0, 1): 0.999 averages ~1,000 steps (the real data, ~500 steps an epoch
    # at batch 16); the demo (32 steps an epoch) wants ~0.99.
    ema_momentum: float = 0.999


@dataclass
class PredictConfig:
    # Test-time augmentation, the same for the OOF and the test set: "none", "hflip" (+ the mirror) or
    # "flip_zoom" (+ the mirror, a 90 % centre zoom and its mirror: 4 views).
    tta: str = "hflip"
    # Prediction batch size.
    batch_size: int = 32
    # Submissions land in this folder as <experiment>.csv.
    out_dir: str = "submissions"
    # Also fit an SVR head on each fold's embeddings (its training part only) and blend it with the network
    # on the OOF; cuML's SVR is used when importable (GPU), else scikit-learn's.
    svr: bool = False
    # The SVR's regularisation C (RBF kernel, on standardised embeddings, targets in the target's units).
    svr_c: float = 16.0


@dataclass
class Config:
    # Experiment name: the run folder is <output_dir>/<name>/.
    name: str = "default"
    # Where experiment folders go.
    output_dir: str = "models"
    # The data set's facts (columns, image layout, target range, competition); see lresizervit/task.py.
    # A saved config.yaml without this section (trained before it existed) means Pawpularity.
    task: Task = field(default_factory=Task)
    # Where the data lives, how it is split into folds and loaded.
    data: DataConfig = field(default_factory=DataConfig)
    # Train-time augmentations (albumentations, or their TF twins with data.pure_tf_augment).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # The regressor: resizer -> backbone -> fusion with the metadata -> head.
    model: ModelConfig = field(default_factory=ModelConfig)
    # How each fold trains: optimizer, schedule, precision, devices.
    train: TrainConfig = field(default_factory=TrainConfig)
    # How the test set (and the OOF, for blending) is predicted.
    predict: PredictConfig = field(default_factory=PredictConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Values allowed for the string-valued choice keys: checked at load time, so a typo fails before training.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.resizer.mode": ("learned", "bilinear", "none", "conv_after_resize"),
    "model.resizer.interpolation": ("bilinear", "bicubic", "area", "nearest"),
    "model.backbone.pooling": ("cls", "gap"),
    "model.loss": ("bce", "mse"),
    "model.fusion": ("concat", "none"),
    "train.precision": ("float32", "mixed_bfloat16", "mixed_float16"),
    "train.backend": ("auto", "tensorflow", "jax"),
    "train.strategy": ("auto", "default", "mirrored", "tpu", "multi_worker"),
    "predict.tta": ("none", "hflip", "flip_zoom"),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotated type; ints are accepted where floats are expected."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            ok = False
        else:
            ok = isinstance(value, tp)
        if not ok:
            raise ConfigError(
                f"{source}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
            )
        return value
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key '{key}' must be a list, got {type(value).__name__} {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    raise ConfigError(f"{source}: key '{key}' has an unsupported type {tp!r}")  # a bug in this file


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = f"{prefix}{key}"
            raise ConfigError(f"{source}: unknown key '{full}' (known here: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        full = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], f"{full}.", source)
        else:
            value = _coerce(data[f.name], tp, full, source)
            if full in CHOICES and value not in CHOICES[full]:
                raise ConfigError(
                    f"{source}: key '{full}' must be one of {', '.join(CHOICES[full])}, got {value!r}"
                )
            kwargs[f.name] = value
    return cls(**kwargs)


def _set_nested(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: key '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=3` -> ("train.epochs", 3); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or the defaults when `path` is None), apply `KEY=VALUE` overrides, validate."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        tree = loaded or {}
    cfg = _build(Config, tree, "", source)
    if overrides:
        for text in overrides:
            key, value = parse_override(text)
            _set_nested(tree, key, value, f"--set {key}")
        cfg = _build(Config, tree, "", f"{source} with --set {' '.join(overrides)}")
    _check_values(cfg, source)
    return cfg


def _check_values(cfg: Config, source: str) -> None:
    """Range checks that types alone cannot express; each names its key."""
    positive = {
        "data.image_size": cfg.data.image_size,
        "data.n_folds": cfg.data.n_folds - 1,  # at least 2 folds
        "model.resizer.target_size": cfg.model.resizer.target_size,
        "model.resizer.filters": cfg.model.resizer.filters,
        "model.resizer.kernel_size": cfg.model.resizer.kernel_size,
        "model.metadata_units": cfg.model.metadata_units,
        "model.head_units": cfg.model.head_units,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "predict.batch_size": cfg.predict.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: key '{key}' is out of range ({_get(cfg, key)!r})")
    if cfg.model.resizer.num_res_blocks < 0:
        raise ConfigError(f"{source}: key 'model.resizer.num_res_blocks' must be >= 0")
    if not 0.0 < cfg.augment.crop_scale_min <= 1.0:
        raise ConfigError(f"{source}: key 'augment.crop_scale_min' must be in (0, 1]")
    for key in ("augment.hflip_p", "augment.color_jitter_p", "augment.coarse_dropout_p",
                "train.warmup_fraction"):
        value = _get(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{source}: key '{key}' must be in [0, 1], got {value!r}")
    # A rate of 1 would drop everything (or, for label smoothing, make every target 0.5).
    for key in ("model.head_dropout", "model.backbone.dropout", "model.metadata_dropout", "model.label_smoothing"):
        value = _get(cfg, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{source}: key '{key}' must be in [0, 1), got {value!r}")
    if cfg.train.weight_decay < 0:
        raise ConfigError(f"{source}: key 'train.weight_decay' must be >= 0")
    if cfg.train.patience < 0:
        raise ConfigError(f"{source}: key 'train.patience' must be >= 0")
    if cfg.train.clip_norm < 0:
        raise ConfigError(f"{source}: key 'train.clip_norm' must be >= 0")
    if not 0.0 < cfg.train.ema_momentum < 1.0:
        raise ConfigError(f"{source}: key 'train.ema_momentum' must be in (0, 1), got {cfg.train.ema_momentum!r}")
    if cfg.train.learning_rate <= 0:
        raise ConfigError(f"{source}: key 'train.learning_rate' must be > 0")
    if cfg.train.backbone_learning_rate is not None and cfg.train.backbone_learning_rate <= 0:
        raise ConfigError(f"{source}: key 'train.backbone_learning_rate' must be > 0 (or null: the same as "
                          f"train.learning_rate), got {cfg.train.backbone_learning_rate!r}")
    if not 0.0 < cfg.train.layer_decay <= 1.0:
        raise ConfigError(f"{source}: key 'train.layer_decay' must be in (0, 1], got {cfg.train.layer_decay!r}")
    if not 0 <= cfg.train.freeze_backbone_epochs < cfg.train.epochs:
        raise ConfigError(f"{source}: key 'train.freeze_backbone_epochs' must be in 0..train.epochs - 1 "
                          f"({cfg.train.epochs - 1}), got {cfg.train.freeze_backbone_epochs!r}")
    if cfg.predict.svr_c <= 0:
        raise ConfigError(f"{source}: key 'predict.svr_c' must be > 0, got {cfg.predict.svr_c!r}")
    for key, message in cfg.task.problems():
        raise ConfigError(f"{source}: key 'task.{key}' {message}")
    if not cfg.task.metadata_columns and cfg.model.fusion != "none":
        raise ConfigError(f"{source}: key 'model.fusion' is {cfg.model.fusion!r} but 'task.metadata_columns' is "
                          "empty: set model.fusion: none for an image-only task")
    if cfg.model.resizer.mode in ("learned", "conv_after_resize") and cfg.model.resizer.interpolation == "area":
        raise ConfigError(f"{source}: key 'model.resizer.interpolation' is 'area', which the learned resizer cannot "
                          "train through (TensorFlow's area resize has no gradient; Keras on JAX has no area "
                          "resize): use bilinear, bicubic or nearest")
    if cfg.model.resizer.mode != "none" and cfg.model.resizer.target_size > cfg.data.image_size:
        raise ConfigError(
            f"{source}: key 'model.resizer.target_size' ({cfg.model.resizer.target_size}) is larger than "
            f"'data.image_size' ({cfg.data.image_size}): the resizer only shrinks"
        )


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def config_from_dict(tree: dict[str, Any], source: str = "<dict>") -> Config:
    cfg = _build(Config, tree, "", source)
    _check_values(cfg, source)
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (a crash never leaves a half-written file)."""
    from lresizervit.io_utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
