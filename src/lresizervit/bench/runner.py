"""Run one measurement in a fresh process and wait for its result.

A fresh process has its own peak memory and its own TensorFlow runtime (logical devices can only be set
before TensorFlow starts), so one variant's figures are not another's.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
from collections.abc import Callable

WORKER_TIMEOUT_S = 3600
POLL_S = 1.0


def _call(target: Callable, args: tuple, results) -> None:
    try:
        results.put(("ok", target(*args)))
    except BaseException as exc:  # the parent must hear of a failure, not wait for a timeout
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def run_in_process(target: Callable, args: tuple, label: str, timeout_s: float = WORKER_TIMEOUT_S,
                   env: dict[str, str] | None = None):
    """`target(*args)` in a spawned process; its return value, or a RuntimeError starting with `label`.

    `target` must be a module-level function and `args` picklable. `env` is added to the worker's
    environment before it starts (KERAS_BACKEND must be set before Keras is first imported). A worker that
    dies without answering (the OOM killer) is noticed within POLL_S seconds; one that hangs is killed after
    `timeout_s`.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_call, args=(target, args, results))
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        proc.start()  # a spawned child copies os.environ here
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    deadline = time.monotonic() + timeout_s
    answer = None
    while answer is None:
        alive = proc.is_alive()  # read before the queue: a result put just before exiting is still there
        try:
            answer = results.get(timeout=POLL_S)
        except queue_module.Empty:
            if not alive:
                proc.join()
                raise RuntimeError(f"{label} gave no result (exit code {proc.exitcode}); out of memory?") from None
            if time.monotonic() > deadline:
                proc.kill()
                proc.join()
                raise RuntimeError(f"{label} gave no result in {timeout_s:g} s; stopped it") from None
    proc.join()
    status, value = answer
    if status == "error":
        raise RuntimeError(f"{label} failed: {value}")
    return value
