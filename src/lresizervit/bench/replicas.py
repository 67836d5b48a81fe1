"""`bench --what replicas`: the train step with 1 and 2 replicas on the same global batch."""

from __future__ import annotations

from lresizervit.bench.machine import machine_description
from lresizervit.bench.runner import run_in_process
from lresizervit.config import Config


def _replica_worker(cfg_dict: dict, batch: int, steps: int) -> dict:
    """Times the train step under 1 and 2 replicas on the same global batch, in a fresh process (logical
    devices can only be configured before TensorFlow starts)."""
    import time

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) < 2:
        # No two accelerators: split the CPU in two, which checks the mechanics, not a speed-up.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from lresizervit.bench.step import random_batch
    from lresizervit.config import config_from_dict
    from lresizervit.training.strategy import make_strategy
    from lresizervit.training.trainer import compile_model

    cfg = config_from_dict(cfg_dict)
    size = cfg.data.image_size
    x, y = random_batch(cfg.task, batch, size)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    out = {}
    for name in ("default", "mirrored"):
        keras.utils.set_random_seed(0)
        strategy = make_strategy(name)
        with strategy.scope():
            model = compile_model(cfg, steps_per_epoch=steps, replicas=strategy.num_replicas_in_sync)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)  # trace: not timed
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
            times.append((time.perf_counter() - t0) / steps)
        out[f"{strategy.num_replicas_in_sync} replica(s)"] = {
            "step_seconds": sorted(times)[1], "step_seconds_runs": times,
            "devices": "GPU" if len(gpus) >= 2 else "logical CPU"}
    return out


def bench_replicas(cfg: Config, batch: int = 32, steps: int = 10) -> dict:
    """Seconds per train step with 1 replica and with 2 (MirroredStrategy) on the same global batch."""
    rows = run_in_process(_replica_worker, (cfg.to_dict(), batch, steps), "bench replicas")
    base = next(iter(rows.values()))["step_seconds"]
    for row in rows.values():
        row["step_time_vs_first"] = row["step_seconds"] / base
    return {"what": "replicas", "backbone": cfg.model.backbone.name, "batch": batch, "steps": steps,
            "precision": cfg.train.precision, "machine": machine_description(), "variants": rows}


def format_markdown(result: dict) -> str:
    """A one-line description and the markdown table of a `bench_replicas` result."""
    lines = [f"train step of {result['backbone']}, global batch {result['batch']}, median of 3 passes of "
             f"{result['steps']} steps ({result['machine']})", "",
             "| replicas | devices | s/step | vs 1 replica |", "|---|---|---:|---:|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['devices']} | {row['step_seconds']:.3f} | "
                     f"{row['step_time_vs_first']:.2f}x |")
    return "\n".join(lines)
