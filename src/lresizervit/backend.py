"""Which Keras backend runs this process (TensorFlow or JAX), and what its models take from tf.data.

Keras fixes its backend when it is first imported (KERAS_BACKEND, else ~/.keras/keras.json, else TensorFlow),
so `train.backend` is applied by the CLI before anything imports Keras. The model code is `keras.layers` /
`keras.ops` only and a saved `.keras` file holds no backend: a fold trained on one backend predicts on the
other. tf.data stays the input pipeline on both; on JAX its tensors are handed over as NumPy arrays.
Stdlib only at import: the CLI calls this before Keras exists in the process.
"""

from __future__ import annotations

import importlib.util
import os
import sys

BACKENDS = ("auto", "tensorflow", "jax")
KEY = "train.backend"


def running() -> str:
    """The backend Keras runs on in this process (importing Keras if nothing has yet)."""
    import keras

    return keras.backend.backend()


def cache_compiled_programs() -> str | None:
    """On JAX, keep compiled XLA programs on disk (JAX's persistent compilation cache), so the folds after
    the first, a resumed fold and `predict.py` skip most of the compile; returns the folder (None on
    TensorFlow). JAX_COMPILATION_CACHE_DIR, where set, is kept; else ~/.cache/lresizervit/jax
    (XDG_CACHE_HOME honoured). A program is the same only for the same model, shapes and JAX version.

    Every program is kept, not only those that took JAX's default 1 s to compile: a fold process compiles
    about a hundred programs under a second each (train, eval and predict steps, the resizer's, the metrics'),
    which together cost seconds per process on a CPU (BENCHMARKS §12: a tiny fold after the first 17.5 → 10.6 s).
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, where set, is kept."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lresizervit", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def select(requested: str) -> str:
    """Make Keras start on `requested` (a value of train.backend); returns the backend it will run on.

    `auto` keeps whatever Keras starts with. Otherwise a process whose Keras already runs another backend,
    or whose KERAS_BACKEND names another one, is an error naming both: a config that says `jax` must never
    train on TensorFlow unnoticed (the speed, the devices and the precision differ).
    """
    backend = _select(requested)
    cache_compiled_programs()
    return backend


def _select(requested: str) -> str:
    check_request(requested)
    if requested == "auto":
        return running()
    if "keras" in sys.modules:
        now = running()
        if now != requested:
            raise ValueError(f"{KEY} is {requested!r} but Keras already runs on {now!r} in this process; "
                             f"start it with KERAS_BACKEND={requested}, or set {KEY}: auto")
        return now
    os.environ["KERAS_BACKEND"] = requested
    return running()


def check_request(requested: str) -> None:
    """`select`'s refusals that need no Keras (an unknown value, KERAS_BACKEND naming another backend, JAX not
    installed): `train` calls it before it reads anything else."""
    if requested not in BACKENDS:
        raise ValueError(f"{KEY} must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "auto" or "keras" in sys.modules:
        return
    env = os.environ.get("KERAS_BACKEND")
    if env and env != requested:
        raise ValueError(f"{KEY} is {requested!r} but the environment says KERAS_BACKEND={env}; make them "
                         f"agree (unset KERAS_BACKEND, or --set {KEY}={env}, or {KEY}: auto)")
    if requested == "jax" and importlib.util.find_spec("jax") is None:
        raise ValueError(f"{KEY} is 'jax' but JAX is not installed here: pip install -e '.[jax]' "
                         "(CPU), or jax[cuda12] / jax[tpu] on a GPU / TPU machine")


def planned(requested: str) -> str | None:
    """The backend Keras will start on for `requested` (a value of train.backend), known without importing
    Keras; None when only importing it would tell (`auto` without KERAS_BACKEND: ~/.keras/keras.json), or
    when `select` is going to refuse the combination anyway."""
    if "keras" in sys.modules:
        return None
    env = os.environ.get("KERAS_BACKEND") or None
    if requested == "auto":
        return env
    return requested if env in (None, requested) else None


MULTI_WORKER_ON_JAX = ("train.strategy: multi_worker is TensorFlow's (TF_CONFIG) and does not run on JAX. On "
                       "several JAX hosts call keras.distribution.initialize() on each and use train.strategy: "
                       "auto (README, 'Several hosts on JAX'), or set train.backend: tensorflow")


def check_support(cfg, backend: str | None) -> None:
    """Refuse what only TensorFlow runs when Keras runs (or will run) on `backend`, naming the config key;
    None (not known yet) passes. Needs no Keras: `train` calls it before Keras starts (~7 s on a CPU)."""
    from lresizervit.models.preset_files import is_savedmodel_spec

    if backend in (None, "tensorflow"):
        return
    if is_savedmodel_spec(cfg.model.backbone.name):
        raise ValueError(f"model.backbone.name {cfg.model.backbone.name!r} is a TF SavedModel (TFSMLayer), which "
                         f"only TensorFlow runs, and Keras runs on {backend}: use a keras_hub: backbone (the same "
                         f"ViTs are keras-hub presets) or train with train.backend: tensorflow")
    if cfg.model.resizer.mode != "none" and cfg.model.resizer.interpolation == "area":
        raise ValueError(f"model.resizer.interpolation 'area' has no resize in Keras on {backend}: use bilinear, "
                         "bicubic or nearest, or train with train.backend: tensorflow")
    if cfg.train.strategy == "multi_worker":
        raise ValueError(MULTI_WORKER_ON_JAX)


def predict_batch(model, x, rows: int | None = None):
    """`model.predict_on_batch` on a batch from tf.data, on either backend.

    TensorFlow takes its own tensors. JAX takes NumPy arrays (on a CPU host `.numpy()` shares the buffer)
    and compiles the model once per input shape: a batch smaller than `rows` (the last one) is padded to
    `rows` with copies of its first row and the padding's outputs dropped, so a prediction compiles once
    (a compile of a ViT costs seconds to minutes on a CPU; a padded row costs a row's compute).
    """
    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        return model.predict_on_batch(x)
    arrays = keras.tree.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t), x)
    n = len(keras.tree.flatten(arrays)[0])
    if rows is None or n >= rows:
        return model.predict_on_batch(arrays)
    index = np.concatenate([np.arange(n), np.zeros(rows - n, np.int64)])
    out = model.predict_on_batch(keras.tree.map_structure(lambda a: a[index], arrays))
    return keras.tree.map_structure(lambda o: np.asarray(o)[:n], out)

