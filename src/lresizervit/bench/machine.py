"""The machine a benchmark ran on: what it is, what its dense math reaches, how much memory a process holds."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def machine_description() -> str:
    """CPU model (as lscpu names it), cores, any GPUs, TensorFlow version."""
    import tensorflow as tf

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    accel = f", GPU: {', '.join(names)}" if names else ", no GPU"
    jax = ""
    try:
        from importlib.metadata import version

        jax = f", JAX {version('jax')}"
    except Exception:  # not installed: the TensorFlow side alone
        pass
    return f"{model}, {platform.machine()}, {os.cpu_count()} cores{accel}, TensorFlow {tf.__version__}{jax}"


def measure_matmul_flops(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> dict:
    """FLOP/s of an n x n x n matmul in `dtype` on the default device: what this machine's dense math
    reaches, the yardstick for a train step's achieved FLOP/s. Median of `repeats` after one warm-up."""
    import time

    import tensorflow as tf

    if n is None:
        n = 8192 if tf.config.list_physical_devices("GPU") else 2048
    a = tf.random.normal((n, n), dtype="float32", seed=1)
    b = tf.random.normal((n, n), dtype="float32", seed=2)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    out = matmul(a, b)
    float(out[0, 0])  # warm-up; reading a value waits for the device
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = matmul(a, b)
        float(out[0, 0])
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"dtype": out.dtype.name, "n": n, "flops_per_second": 2 * n**3 / seconds, "seconds_runs": times}


def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    """Current resident memory of this process (Linux), for "static" memory before the first step."""
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """The high-water mark of this process's resident memory (Linux VmHWM).

    Not `ru_maxrss`: that one also counts the memory of the process before its last exec, so a worker
    started by fork + exec from a large parent could report the parent's size.
    """
    return _status_mib("VmHWM")
