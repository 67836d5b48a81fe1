"""`python -m lresizervit bench`: the loader's images/s against a plain decode_jpeg + resize pipeline over
the same files, measured side by side in one process, median of several passes after a warm-up pass."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
from pathlib import Path

from lresizervit.config import Config
from lresizervit.data.schema import META_COLUMNS, TARGET, check_images, read_table


def bench_loader(cfg: Config, n_images: int = 256, repeats: int = 3) -> dict:
    import tensorflow as tf

    from lresizervit.data.pipeline import decode_benchmark_dataset, make_dataset, measure_images_per_second

    data_dir = Path(cfg.data.dir)
    train = read_table(data_dir / "train.csv", "train").iloc[:n_images]
    paths = check_images(train, data_dir / "train", str(data_dir / "train.csv"))
    meta = train[list(META_COLUMNS)].to_numpy("float32")
    target = train[TARGET].to_numpy("float32")
    size, bs = cfg.data.image_size, cfg.train.batch_size
    aug = dataclasses.asdict(cfg.augment)

    def cached_train():
        ds = make_dataset(paths, meta, target, image_size=size, batch_size=bs, training=True,
                          augment_kwargs=aug, cache=True)
        for _ in ds:  # fill the cache: what every epoch after the first reads
            pass
        return ds

    pipelines = {
        "plain decode_jpeg + resize": lambda: decode_benchmark_dataset(paths, size, bs),
        "train loader (decode + albumentations)": lambda: make_dataset(
            paths, meta, target, image_size=size, batch_size=bs, training=True, augment_kwargs=aug),
        "train loader, 1 thread (train.deterministic)": lambda: make_dataset(
            paths, meta, target, image_size=size, batch_size=bs, training=True, augment_kwargs=aug,
            num_parallel_calls=1),
        "eval loader (decode + centre crop)": lambda: make_dataset(
            paths, meta, target, image_size=size, batch_size=bs, training=False),
        "train loader, cached (epochs 2..)": cached_train,
    }
    from lresizervit.training.trainer import tfrecords_root

    rec_dir = tfrecords_root(cfg) / "train"
    if (rec_dir / "manifest.json").is_file():
        # The same number of images, from records pre-resized by `python -m lresizervit tfrecords`.
        from lresizervit.data.tfrecords import make_tfrecord_dataset

        n_batches = -(-len(paths) // bs)
        for label, pure_tf in (("albumentations", False), ("pure TF", True)):
            pipelines[f"TFRecord train loader ({label})"] = (
                lambda pure_tf=pure_tf: make_tfrecord_dataset(
                    rec_dir, folds=None, image_size=size, batch_size=bs, training=True, augment_kwargs=aug,
                    pure_tf=pure_tf).take(n_batches))
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    built = {name: make() for name, make in pipelines.items()}
    for ds in built.values():  # warm-up pass: tracing, thread pools, the OS file cache
        measure_images_per_second(ds)
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every pipeline alike
        for name, ds in built.items():
            rates[name].append(float(measure_images_per_second(ds)["images_per_second"]))
    base = statistics.median(rates["plain decode_jpeg + resize"])
    rows = {name: {"images_per_second": statistics.median(r), "ratio_to_plain": statistics.median(r) / base,
                   "runs": r} for name, r in rates.items()}
    return {"what": "loader", "data_dir": str(data_dir), "images": len(paths), "image_size": size,
            "batch_size": bs, "repeats": repeats, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"TensorFlow {tf.__version__}", "pipelines": rows}


STEP_TIMEOUT_S = 3600


def _step_worker(cfg_dict: dict, image_size: int, steps: int, batch: int, queue) -> None:
    """Runs in its own process, so its peak RSS is the variant's own."""
    import resource
    import time

    import keras
    import numpy as np

    from lresizervit.config import config_from_dict
    from lresizervit.models.regressor import build_regressor, make_loss

    cfg = config_from_dict(cfg_dict)
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_regressor(cfg.model, image_size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=make_loss(cfg.model))
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (batch, 12)).astype("float32")}
    y = rng.uniform(1, 100, batch).astype("float32")
    model.train_on_batch(x, y)  # trace + first step: not timed
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    queue.put({
        "parameters": int(model.count_params()),
        "step_seconds": sorted(times)[len(times) // 2],
        "step_seconds_runs": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_model_mib": rss_before / 1024,
    })


def bench_step(cfg: Config, batch: int = 4, steps: int = 3, variants=("learned", "bilinear", "none")) -> dict:
    """Seconds per train step and peak memory for each resizer mode, at the config's sizes, each variant
    in a fresh process (peak RSS is per process), run one after the other on the same machine."""
    import multiprocessing as mp

    import tensorflow as tf

    ctx = mp.get_context("spawn")
    rows = {}
    for mode in variants:
        tree = cfg.to_dict()
        tree["model"]["resizer"]["mode"] = mode
        queue = ctx.Queue()
        proc = ctx.Process(target=_step_worker, args=(tree, cfg.data.image_size, steps, batch, queue))
        proc.start()
        try:
            # A worker killed by the OOM killer never answers: do not wait for it forever.
            result = queue.get(timeout=STEP_TIMEOUT_S)
        except Exception as exc:
            proc.kill()
            raise RuntimeError(f"bench step: variant {mode!r} gave no result (exit code {proc.exitcode}); "
                               f"out of memory?") from exc
        proc.join()
        seen = cfg.data.image_size if mode == "none" else cfg.model.resizer.target_size
        rows[f"{mode} {cfg.data.image_size}->{seen}"] = result
    base_name = next(iter(rows))
    base = rows[base_name]["step_seconds"]
    for row in rows.values():
        row["step_time_vs_first"] = row["step_seconds"] / base
    return {"what": "train step", "backbone": cfg.model.backbone.name, "batch": batch, "steps": steps,
            "precision": cfg.train.precision, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"TensorFlow {tf.__version__}", "variants": rows}


def _replica_worker(cfg_dict: dict, batch: int, steps: int, queue) -> None:
    """Times the train step under 1 and 2 replicas on the same global batch, in a fresh process (logical
    devices can only be configured before TensorFlow starts)."""
    import time

    import numpy as np
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) < 2:
        # No two accelerators: split the CPU in two, which checks the mechanics, not a speed-up.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from lresizervit.config import config_from_dict
    from lresizervit.training.strategy import make_strategy
    from lresizervit.training.trainer import compile_model

    cfg = config_from_dict(cfg_dict)
    size = cfg.data.image_size
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (batch, 12)).astype("float32")}
    y = rng.uniform(1, 100, batch).astype("float32")
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
    queue.put(out)


def bench_replicas(cfg: Config, batch: int = 32, steps: int = 10) -> dict:
    """Seconds per train step with 1 replica and with 2 (MirroredStrategy) on the same global batch."""
    import multiprocessing as mp

    import tensorflow as tf

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_replica_worker, args=(cfg.to_dict(), batch, steps, queue))
    proc.start()
    try:
        rows = queue.get(timeout=STEP_TIMEOUT_S)
    except Exception as exc:
        proc.kill()
        raise RuntimeError(f"bench replicas gave no result (exit code {proc.exitcode})") from exc
    proc.join()
    base = next(iter(rows.values()))["step_seconds"]
    for row in rows.values():
        row["step_time_vs_first"] = row["step_seconds"] / base
    return {"what": "replicas", "backbone": cfg.model.backbone.name, "batch": batch, "steps": steps,
            "precision": cfg.train.precision, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"TensorFlow {tf.__version__}", "variants": rows}
