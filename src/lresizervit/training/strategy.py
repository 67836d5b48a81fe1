"""Choose a tf.distribute strategy: TPU → several GPUs → one GPU → CPU, or multi-worker from TF_CONFIG.

`train.batch_size` is per replica: the global batch is `batch_size × replicas`, and the learning rate is
scaled by the same factor (the linear scaling rule of Goyal et al. 2017), so one config trains alike on a
laptop and on 8 TPU cores, in the same number of epochs.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from lresizervit.training.cluster import multi_worker_task  # noqa: F401  (re-exported)
from lresizervit.training.cluster import tpu_present as _tpu_present

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
# The dtypes TF's collective all-reduce accepts (CollectiveReduceV2); images arrive as uint8.
_COLLECTIVE_DTYPES = (tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` accepts what Keras 3's `fit` hands it.

    Keras 3.15 (keras/src/backend/tensorflow/trainer.py) calls, under any tf.distribute strategy:
    - `_maybe_symbolic_build`, at the start of every `fit` and `evaluate`: `strategy.reduce("MEAN", batch,
      axis=None)` on the whole first batch, a nest `({"image", "metadata"}, target)`, only to read its shapes
      and dtypes. `Strategy.reduce` is documented for one value ("TODO: support `value` being a nest" in
      distribute_lib.py); MirroredStrategy maps over nests anyway, MultiWorkerMirroredStrategy does not
      ("Attempt to convert a value ({'image': PerReplica...}) to a Tensor"), and its collective all-reduce
      has no uint8 kernel.
    - `reduce_per_replica`, after every train/test step in multi-worker mode: `strategy.reduce("MEAN",
      metric, axis=0)` on scalar metrics, which have no axis 0 ("Invalid reduction dimension 0 for input
      with 0 dimensions"); the single-worker path takes the mean across replicas, i.e. `axis=None`.
    This subclass reduces a nest leaf by leaf, widens dtypes the collective lacks to float32 and back, and
    reduces a scalar across replicas only. Every reduction stays a real all-reduce: the result is what the
    call asks for, so nothing else that calls `reduce` sees a difference. Cost: one all-reduce of the first
    batch per `fit` and per validation (~4 bytes per pixel), negligible next to an epoch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A tf.function: `run` on an eager function warns about eager overhead on every call.
        self._widen = tf.function(lambda t: tf.cast(t, tf.float32))

    def reduce(self, reduce_op, value, axis=None):
        def one(v):
            local = self.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) \
                else tf.convert_to_tensor(v)
            leaf_axis = None if local.shape.rank == 0 else axis
            if local.dtype in _COLLECTIVE_DTYPES:
                return super(_MultiWorkerMirroredStrategy, self).reduce(reduce_op, v, leaf_axis)
            wide = self.run(self._widen, args=(v,))
            reduced = super(_MultiWorkerMirroredStrategy, self).reduce(reduce_op, wide, leaf_axis)
            return tf.cast(tf.round(reduced) if local.dtype.is_integer else reduced, local.dtype)

        return tf.nest.map_structure(one, value)


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
        return _MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        # On a machine without GPUs `mirrored` mirrors over the logical CPU devices (used by the tests).
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def check_workers_agree(strategy: tf.distribute.Strategy, **state: int) -> None:
    """Fail on every worker, with the same message, unless all workers report the same `state`.

    Workers that disagree on whether a fold is complete or on the epoch it resumes from would train a
    different number of steps and hang in a collective; a gather across workers turns that into an error.
    """
    names = list(state)
    local = tf.constant([[state[n] for n in names]], tf.int64)
    gathered = strategy.gather(strategy.experimental_distribute_values_from_function(lambda ctx: local), axis=0)
    rows = gathered.numpy().tolist()
    if any(row != rows[0] for row in rows):
        per_worker = "; ".join(f"replica {i}: " + ", ".join(f"{n}={v}" for n, v in zip(names, row, strict=True))
                               for i, row in enumerate(rows))
        raise ValueError(f"the workers disagree ({per_worker}); stop them all, make their folds' backup/ "
                         f"folders agree (or delete them, or pass --force everywhere) and start again")


def describe(strategy: tf.distribute.Strategy) -> str:
    return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"
