"""Where a fold's training steps run, on either backend: how many replicas, on which devices, inside
which scope the model is built and fitted, and what that asks of the batches.

TensorFlow: a tf.distribute strategy (training/strategy.py). JAX: `keras.distribution.DataParallel` over
every device JAX sees (8 cores of a TPU v5e-8, several GPUs), or nothing on one device. Under DataParallel a
batch is one array sharded along its first axis, so the BatchNorm statistics of the resizer span the global
batch with no flag (TensorFlow needs `synchronized=True` for that), and every batch must split evenly over
the devices: training drops its last, partial batch; validation batches are padded with zero-weight copies
of a row, so val RMSE is over exactly the fold's rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from lresizervit.backend import MULTI_WORKER_ON_JAX, check_support


@dataclasses.dataclass
class Placement:
    replicas: int
    devices: list[str]
    description: str
    # Builds and fits the model inside it (tf.distribute strategy scope, keras.distribution scope).
    scope: Callable[[], contextlib.AbstractContextManager]
    # Every training batch the same size (TPU; several JAX devices).
    equal_batches: bool = False
    # Validation batches padded to the global batch (JAX: it shards them too, and compiles a step per batch
    # shape, so one size also means one compile; see pad_batches).
    pad_validation: bool = False
    # The tf.distribute strategy on TensorFlow (multi-worker checks need it), None on JAX.
    tf_strategy: Any = None


def check_backend_support(cfg) -> None:
    """Refuse, before anything is trained, what only TensorFlow runs, naming the config key."""
    check_support(cfg, keras.backend.backend())


def make_placement(name: str, tf_strategy: Any = None) -> Placement:
    """The placement for `train.strategy` on the running backend (`tf_strategy`: one made already)."""
    if keras.backend.backend() == "jax":
        return _jax_placement(name)
    import tensorflow as tf

    from lresizervit.training.strategy import describe, make_strategy

    strategy = tf_strategy or make_strategy(name)
    try:
        devices = [d.split("/device:")[-1].lower() for d in strategy.extended.worker_devices]
    except RuntimeError:  # the default strategy has none: the process's default device
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpus[0].name.split("/device:")[-1].lower()] if gpus else ["cpu:0"]
    return Placement(strategy.num_replicas_in_sync, devices, describe(strategy), strategy.scope,
                     equal_batches=isinstance(strategy, tf.distribute.TPUStrategy), tf_strategy=strategy)


def _jax_placement(name: str) -> Placement:
    import jax

    from lresizervit.training.strategy import STRATEGIES

    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_ON_JAX)
    devices = jax.devices()
    names = [f"{d.platform}:{d.id}" for d in devices]
    if name == "tpu" and devices[0].platform != "tpu":
        raise ValueError(f"train.strategy is 'tpu' but JAX sees no TPU (its devices: {', '.join(names)}); "
                         "on a Kaggle TPU VM use its JAX image, or set train.strategy: auto")
    if name == "default" or (name == "auto" and len(devices) == 1):
        return Placement(1, names[:1], f"JAX on {names[0]}", contextlib.nullcontext, pad_validation=True)
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    return Placement(len(devices), names, f"JAX DataParallel over {len(devices)} {devices[0].platform} "
                     f"device(s)", distribution.scope, equal_batches=True, pad_validation=True)


def pad_batches(ds, multiple: int):
    """`(x, y)` batches → `(x, y, weight)` batches whose size is a multiple of `multiple`: the missing rows
    are copies of the batch's first row with weight 0, so weighted metrics are over the real rows only."""
    import tensorflow as tf

    def pad(x, y):
        n = tf.shape(y)[0]
        extra = (multiple - n % multiple) % multiple
        index = tf.concat([tf.range(n), tf.zeros([extra], tf.int32)], axis=0)
        weight = tf.concat([tf.ones([n], tf.float32), tf.zeros([extra], tf.float32)], axis=0)
        take = lambda t: tf.gather(t, index)  # noqa: E731
        return tf.nest.map_structure(take, x), take(y), weight

    return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE) if multiple > 1 else ds
