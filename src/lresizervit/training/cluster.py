"""Which worker this process is under `train.strategy: multi_worker`, read from TF_CONFIG alone: the
commands that only write files (`cv`, `report`) ask it without importing TensorFlow. Also whether a TPU is
here, and whether several folds may train at once on this machine (`train_folds.sh --parallel`), the same
way."""

from __future__ import annotations

import json
import os


def multi_worker_task(name: str) -> tuple[int, bool] | None:
    """(this worker's index, whether it is the chief) under `multi_worker`, else None.

    The chief is the task of type "chief", or worker 0 when the cluster has none (TF's convention). It is
    read from TF_CONFIG, so it is known before the strategy exists.
    """
    if name != "multi_worker" or "TF_CONFIG" not in os.environ:
        return None
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task, cluster = tf_config["task"], tf_config["cluster"]
        kind, index = task["type"], int(task["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"TF_CONFIG needs a cluster and a task with a type and an index: {exc}") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    # A worker's index alone is ambiguous beside a chief (chief 0 and worker 0): number the workers after it.
    return (index + (1 if "chief" in cluster and kind == "worker" else 0), chief)


def tpu_present() -> bool:
    """Whether this machine has a TPU, from cheap signals only: constructing a TPUClusterResolver on a machine
    without a TPU can block on metadata-server look-ups."""
    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_ACCELERATOR_TYPE"):
        return True
    return any(name.startswith("accel") for name in os.listdir("/dev")) if os.path.isdir("/dev") else False


def check_parallel_folds(strategy: str, parallel: int) -> None:
    """Refuse training `parallel` folds at once on this machine (`train_folds.sh --parallel`) under a
    `train.strategy` whose fold process cannot share it with another: a ValueError naming why."""
    if parallel <= 1:
        return
    why = None
    if strategy == "multi_worker":
        # Every worker of the cluster trains the same fold in step (collectives); a pool would start
        # different folds on different workers, each waiting for partners that never come.
        why = "multi_worker trains one fold at a time on every machine of the cluster, in step"
    elif strategy == "tpu" or (strategy == "auto" and tpu_present()):
        # One process holds a TPU host's chips; the second fold process could not open them.
        why = f"{strategy} trains on this machine's TPU, which one process holds"
    if why is not None:
        raise ValueError(f"train_folds.sh --parallel {parallel}: train.strategy {why}; train the folds one at "
                         f"a time (drop --parallel)")
