"""Choose a tf.distribute strategy: TPU → several GPUs → one GPU → CPU, or multi-worker from TF_CONFIG.

`train.batch_size` is per replica: the global batch is `batch_size × replicas`, and the learning rate is
scaled by the same factor (the linear scaling rule of Goyal et al. 2017), so one config trains alike on a
laptop and on 8 TPU cores, in the same number of epochs.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")


def _tpu_present() -> bool:
    # Cheap signals only: constructing a TPUClusterResolver on a machine without a TPU can block on
    # metadata-server look-ups.
    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_ACCELERATOR_TYPE"):
        return True
    return any(name.startswith("accel") for name in os.listdir("/dev")) if os.path.isdir("/dev") else False


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as exc:
        raise ValueError(f"train.strategy: no TPU could be initialised ({exc})") from exc
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy for `train.strategy`; `auto` picks the biggest thing this machine has."""
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "tpu" or (name == "auto" and _tpu_present()):
        return _tpu_strategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("train.strategy multi_worker needs the TF_CONFIG environment variable "
                             "(cluster addresses and this worker's index)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        # On a machine without GPUs `mirrored` mirrors over the logical CPU devices (used by the tests).
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy) -> str:
    return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"
