"""Which worker this process is under `train.strategy: multi_worker`, read from TF_CONFIG alone: the
commands that only write files (`cv`, `report`) ask it without importing TensorFlow."""

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
