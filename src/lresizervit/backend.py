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
    (XDG_CACHE_HOME honoured). A program is the same only for the same model, shapes and JAX version."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lresizervit", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
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
    if requested not in BACKENDS:
        raise ValueError(f"{KEY} must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "auto":
        return running()
    if "keras" in sys.modules:
        now = running()
        if now != requested:
            raise ValueError(f"{KEY} is {requested!r} but Keras already runs on {now!r} in this process; "
                             f"start it with KERAS_BACKEND={requested}, or set {KEY}: auto")
        return now
    env = os.environ.get("KERAS_BACKEND")
    if env and env != requested:
        raise ValueError(f"{KEY} is {requested!r} but the environment says KERAS_BACKEND={env}; make them "
                         f"agree (unset KERAS_BACKEND, or --set {KEY}={env}, or {KEY}: auto)")
    if requested == "jax" and importlib.util.find_spec("jax") is None:
        raise ValueError(f"{KEY} is 'jax' but JAX is not installed here: pip install -e '.[jax]' "
                         "(CPU), or jax[cuda12] / jax[tpu] on a GPU / TPU machine")
    os.environ["KERAS_BACKEND"] = requested
    return running()


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

