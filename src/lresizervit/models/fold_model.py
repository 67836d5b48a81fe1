"""A fold's model as files that every supported Keras reads, and reading them back.

    fold_<k>/model.weights.h5   the weights, in Keras's HDF5 weights format: arrays only, no code, no config
    fold_<k>/model.json         what this package's own code needs, beside the experiment's config.yaml, to
                                build the same layers again: the input size, the metadata statistics, a
                                keras-hub backbone's class and constructor arguments, the dtype policy; and
                                the versions that wrote it

Why not a `.keras` archive: it stores every layer's full config, initializers included, and a newer Keras
writes arguments an older one rejects (Keras 3.15's `GlorotUniform(input_axes=...)` fails under 3.13.2,
Kaggle's GPU image), so a model trained with today's Keras would not load where the competition is scored.
A weights file names each variable by the path of layer classes that holds it, not by any config, so the
layers rebuilt by this code (the wheel ships with the experiment, so it is the code that trained it) take
the weights under every Keras in the supported range. keras-hub's own presets are config.json + weights
for the same reason; here the backbone's constructor arguments travel in model.json, since the preset
folder it was fine-tuned from is not there at prediction.

Nothing read here can run code: JSON numbers and strings, HDF5 arrays, and keras-hub classes looked up by
name among the supported families only. A fold written before this format (`model.keras`) still loads
where its Keras can read it (in safe mode); where it cannot, the error names the file, the Keras that wrote
it and the one running, and `python -m lresizervit convert` rewrites it in this format where it loads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import keras

from lresizervit.io_utils import atomic_write_json, atomic_write_with
from lresizervit.run import (
    LEGACY_MODEL_FILE,
    MODEL_FILE,
    MODEL_SPEC_FILE,
    FoldFileError,
    load_run_config,
    retrain_command,
)

SPEC_FORMAT = 1
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")  # train.precision's choices
# How far the converted model's predictions may move from the archive's (target units, e.g. Pawpularity).
CONVERT_TOLERANCE = 1e-3


def _installed(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def runtime_versions(keras_hub: bool = False) -> dict:
    """The versions that matter for reading a model back: recorded in model.json, named in errors."""
    import lresizervit

    versions = {"lresizervit": lresizervit.__version__, "python": sys.version.split()[0],
                "keras": keras.__version__, "backend": keras.backend.backend(),
                "tensorflow": _installed("tensorflow") or _installed("tensorflow-cpu")}
    if keras.backend.backend() == "jax":
        versions["jax"] = _installed("jax")
    if keras_hub:
        versions["keras_hub"] = _installed("keras-hub")
    return versions


def model_spec(model: keras.Model) -> dict:
    """model.json for `model` (built by `build_regressor`), read off its layers: so a model loaded from an
    old archive describes itself exactly as one just trained."""
    from lresizervit.models.keras_hub_backbone import backbone_architecture

    spec = {"format": SPEC_FORMAT, "image_size": int(model.input["image"].shape[1]),
            "metadata_columns": int(model.input["metadata"].shape[1]), "precision": model.dtype_policy.name,
            "metadata_stats": None, "backbone_architecture": None}
    with contextlib.suppress(ValueError):  # no such layer: every metadata column is 0/1
        norm = model.get_layer("metadata_standardise").get_config()
        spec["metadata_stats"] = [[float(v) for v in norm["mean"]], [float(v) for v in norm["variance"]]]
    with contextlib.suppress(ValueError):  # no such layer: a native or SavedModel backbone
        spec["backbone_architecture"] = backbone_architecture(model.get_layer("keras_hub_backbone"))
    spec["written_by"] = runtime_versions(keras_hub=spec["backbone_architecture"] is not None)
    return spec


def stored_variables(path: str | os.PathLike) -> int:
    """How many variables a weights file holds (the arrays under its `layers` group)."""
    import h5py

    count = 0

    def visit(_name, obj):
        nonlocal count
        count += isinstance(obj, h5py.Dataset)

    with h5py.File(path, "r") as f:
        if "layers" in f:
            f["layers"].visititems(visit)
    return count


def _save_weights(model: keras.Model, path: Path) -> None:
    # Through an uncompiled twin (the same layers, so the same names): a compiled model's weights file also
    # holds the optimizer's state, 2-3x the weights with AdamW, which prediction never reads.
    keras.Model(model.input, model.output, name=model.name).save_weights(path)
    stored = stored_variables(path)
    if stored != len(model.weights):
        raise RuntimeError(f"Keras {keras.__version__} saved {stored} of the model's {len(model.weights)} "
                           "variables: a layer holds sublayers where this Keras does not look for them")


def save_fold_model(model: keras.Model, fold_dir: str | os.PathLike) -> Path:
    """Write `model` as fold_dir/model.weights.h5 + model.json, each atomically; returns the weights file.

    The weights go first: a process killed between the two leaves the previous model.json, which describes
    the same architecture (it depends on the fold, not the epoch) and records the old size, so the pair
    is caught as mismatched rather than silently read. A Keras that would leave a variable out of the file
    (as 3.13 did with the resizer's blocks before they moved into `ResidualBlocks`) fails here, at training
    time, not with a model that predicts from random weights."""
    fold_dir = Path(fold_dir)
    spec = model_spec(model)
    weights = atomic_write_with(fold_dir / MODEL_FILE, lambda tmp: _save_weights(model, tmp),
                                suffix=".weights.h5")
    spec["weights_bytes"] = weights.stat().st_size
    spec["weights_sha256"] = file_sha256(weights)
    atomic_write_json(fold_dir / MODEL_SPEC_FILE, spec)
    return weights


def file_sha256(path: str | os.PathLike) -> str:
    # HDF5 keeps no checksum of its arrays: bytes changed in place (a bad copy, a bad sector) would load as
    # wrong weights without a word. ~1 s per 350 MB fold (Swin-B), next to several to build and load it.
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fold_of(fold_dir: Path) -> int | None:
    name = fold_dir.name
    return int(name.split("_", 1)[1]) if name.startswith("fold_") and name[5:].isdigit() else None


def _bad(path: Path, what: str) -> FoldFileError:
    fold = _fold_of(path.parent)
    if fold is None:
        return FoldFileError(f"{path}: {what}")
    return FoldFileError(f"{path}: fold {fold}'s {path.name}: {what}. Retrain the fold: "
                         f"{retrain_command(path.parent.parent, fold)}")


def read_spec(path: str | os.PathLike) -> dict:
    """A fold's model.json, checked field by field; a FoldFileError names the file and the field."""
    path = Path(path)
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise _bad(path, f"missing: the fold's {MODEL_FILE} cannot be rebuilt without it") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"not readable JSON ({exc}): truncated or corrupted") from None
    if not isinstance(spec, dict):
        raise _bad(path, "not a JSON object")
    if spec.get("format") != SPEC_FORMAT:
        raise _bad(path, f"format {spec.get('format')!r}, which this lresizervit does not read (it reads "
                   f"{SPEC_FORMAT}); predict with the lresizervit that trained it (the wheel beside it)")

    def field(key, ok, expected):
        if key not in spec or not ok(spec[key]):
            raise _bad(path, f"field {key!r} is {spec.get(key, 'missing')!r}, expected {expected}")
        return spec[key]

    def numbers(v):
        return isinstance(v, list) and all(isinstance(x, int | float) and math.isfinite(x) for x in v)

    field("image_size", lambda v: isinstance(v, int) and v > 0, "a positive integer")
    field("metadata_columns", lambda v: isinstance(v, int) and v >= 0, "a count of columns")
    field("precision", lambda v: v in DTYPE_POLICIES, f"one of {DTYPE_POLICIES}")
    field("weights_bytes", lambda v: isinstance(v, int) and v > 0, "the weights file's size in bytes")
    field("weights_sha256", lambda v: isinstance(v, str) and len(v) == 64, "the weights file's SHA-256")
    field("metadata_stats", lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(
        numbers(s) and len(s) == spec["metadata_columns"] for s in v)), "null or [means, variances], "
          "one number per metadata column each")
    field("backbone_architecture", lambda v: v is None or (
        isinstance(v, dict) and isinstance(v.get("class_name"), str) and isinstance(v.get("config"), dict)
        and numbers(v.get("scale")) and len(v["scale"]) == 3 and numbers(v.get("offset"))
        and len(v["offset"]) == 3 and (v.get("pooling") is None or isinstance(v.get("pooling"), str))),
        "null or {class_name, config, scale, offset, pooling}")
    return spec


@contextlib.contextmanager
def _dtype_policy(name: str):
    # Every layer reads the global policy when it is built; the caller's is put back after.
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def build_fold_model(cfg, spec: dict) -> keras.Model:
    """The layers of a fold's model, with untrained weights, from the experiment's config and model.json.

    Built in float32 whatever `train.precision` was: the variables are float32 under every policy, so a
    model trained in mixed_bfloat16 (the TPU recipe) predicts the same on any backend and hardware, to
    ~1e-5 rather than bfloat16's ~1e-2, and a T4 (Kaggle's GPU) has no bfloat16 units to gain from. The OOF
    is predicted the same way after training, so the CV scores what the submission computes."""
    from lresizervit.models.regressor import build_regressor

    stats = spec["metadata_stats"]
    with _dtype_policy("float32"):
        return build_regressor(cfg.model, spec["image_size"], cfg.task,
                               metadata_stats=(stats[0], stats[1]) if stats else None,
                               backbone_architecture=spec["backbone_architecture"])


def load_fold_model(path: str | os.PathLike, cfg=None) -> keras.Model:
    """A fold's model for inference, from `fold_<k>/model.weights.h5` (+ model.json, + the experiment's
    config.yaml unless `cfg`, the config that trained it, is given) or an older `fold_<k>/model.keras`."""
    path = Path(path)
    if path.suffix == ".keras":
        return load_legacy_model(path)
    fold_dir = path.parent
    spec = read_spec(fold_dir / MODEL_SPEC_FILE)
    if cfg is None:
        cfg = load_run_config(fold_dir.parent)
    if spec["image_size"] != cfg.data.image_size or spec["metadata_columns"] != len(cfg.task.metadata_columns):
        raise _bad(fold_dir / MODEL_SPEC_FILE, f"describes a model of {spec['image_size']} px images and "
                   f"{spec['metadata_columns']} metadata columns, but the experiment's config has "
                   f"data.image_size {cfg.data.image_size} and {len(cfg.task.metadata_columns)} metadata "
                   f"columns: the fold belongs to another experiment")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _bad(path, "missing") from None
    if size != spec["weights_bytes"]:
        raise _bad(path, f"holds {size} bytes where its {MODEL_SPEC_FILE} records {spec['weights_bytes']}: "
                   "truncated, or not the weights that file describes")
    if file_sha256(path) != spec["weights_sha256"]:
        raise _bad(path, f"its bytes differ from those its {MODEL_SPEC_FILE} records (SHA-256): corrupted, or "
                   "not the weights that file describes")
    model = build_fold_model(cfg, spec)
    try:
        stored = stored_variables(path)
        if stored != len(model.weights):
            raise ValueError(f"it holds {stored} variables, the model {len(model.weights)}")
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise _bad(path, f"its weights do not fit the model its {MODEL_SPEC_FILE} and the experiment's "
                   f"config describe ({type(exc).__name__}: {first})") from None
    return model


# ---------------------------------------------------------------------------------- the format before this

def archive_keras_version(path: str | os.PathLike) -> str | None:
    """The Keras version a `.keras` archive records in its metadata.json, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return None


def needs_unsafe_loading(path) -> bool:
    """Whether a saved archive holds a SavedModel backbone (a TFSMLayer), the one kind Keras loads only with
    safe_mode=False; read from the file's config without deserialising anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable .keras model file ({exc}); retrain its fold") from None
    return "TFSMLayer" in config


class UnreadableArchiveError(ValueError):
    """A `.keras` archive that this Keras cannot read; the message says which Keras wrote it and what to do."""


def load_legacy_model(path) -> keras.Model:
    """A fold's `model.keras` (the format before model.weights.h5 + model.json), in safe mode: a model file
    from someone else's dataset cannot run code (a Lambda layer is refused). The exception: a SavedModel
    backbone (`savedmodel:` / `hub:`), which Keras loads only with safe_mode=False and which also needs its
    SavedModel folder where it was trained from."""
    import lresizervit.models.regressor  # noqa: F401  (registers this package's layers for deserialisation)

    path = Path(path)
    unsafe = needs_unsafe_loading(path)
    if unsafe and keras.backend.backend() != "tensorflow":
        raise ValueError(f"{path}: its backbone is a TF SavedModel (model.backbone.name savedmodel:/hub:), "
                         f"which only TensorFlow runs; load it with KERAS_BACKEND=tensorflow, not "
                         f"{keras.backend.backend()}")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except (TypeError, ValueError) as exc:
        if "safe_mode" in str(exc):
            raise ValueError(f"{path}: refused: the model holds code (e.g. a Lambda layer) that would run when "
                             f"it is loaded; only load models this package wrote "
                             f"({str(exc).splitlines()[0]})") from None
        writer = archive_keras_version(path)
        if writer is None or writer == keras.__version__:
            raise
        last = (str(exc).strip().splitlines() or [""])[-1]
        last = last if len(last) <= 200 else last[:200] + "..."
        run_dir = path.parent.parent
        raise UnreadableArchiveError(
            f"{path}: written by Keras {writer}, which this Keras {keras.__version__} cannot read ({last}). "
            f"Rewrite the experiment's folds as portable files (model.weights.h5 + model.json, read by every "
            f"Keras from 3.13) where the archive loads, e.g. on the machine that trained it: "
            f"python -m lresizervit convert {run_dir}; or predict with Keras {writer}") from None


def convert_fold(cfg, fold: int, keep_archive: bool = False) -> dict:
    """Rewrite fold `fold`'s `model.keras` as model.weights.h5 + model.json, check that the rebuilt model
    predicts what the archive does, then remove the archive (unless `keep_archive`)."""
    import numpy as np

    from lresizervit.run import fold_dir

    folder = fold_dir(cfg.run_dir, fold)
    archive = folder / LEGACY_MODEL_FILE
    archive_bytes = archive.stat().st_size
    old = load_legacy_model(archive)
    save_fold_model(old, folder)
    new = load_fold_model(folder / MODEL_FILE, cfg)
    rng = np.random.default_rng(fold)
    size, n_meta = cfg.data.image_size, len(cfg.task.metadata_columns)
    batch = {"image": rng.integers(0, 256, (2, size, size, 3), dtype="uint8"),
             "metadata": rng.integers(0, 2, (2, n_meta)).astype("float32")}
    gap = float(np.max(np.abs(old.predict(batch, verbose=0) - new.predict(batch, verbose=0))))
    if not gap <= CONVERT_TOLERANCE:
        for name in (MODEL_FILE, MODEL_SPEC_FILE):
            (folder / name).unlink(missing_ok=True)
        raise FoldFileError(f"{archive}: the model rebuilt from its weights predicts up to {gap:g} away from "
                            f"the archive's (tolerance {CONVERT_TOLERANCE:g}); nothing was converted")
    if not keep_archive:
        archive.unlink()
    return {"fold": fold, "max_abs_difference": gap, "archive_bytes": archive_bytes,
            "weights_bytes": (folder / MODEL_FILE).stat().st_size,
            "spec_bytes": (folder / MODEL_SPEC_FILE).stat().st_size}


def convert_experiment(spec: str | os.PathLike, keep_archive: bool = False) -> list[dict]:
    """Convert every fold of the experiment `spec` (a folder or its config YAML) still held as `model.keras`;
    returns one result per converted fold (none when every fold is in the portable format already)."""
    from lresizervit.run import experiment_config, fold_models

    cfg = experiment_config(spec)
    return [convert_fold(cfg, k, keep_archive) for k, path in enumerate(fold_models(cfg.run_dir))
            if path.name == LEGACY_MODEL_FILE]
