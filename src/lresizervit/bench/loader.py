"""`bench --what loader`: the loader's images/s against a plain decode_jpeg + resize over the same files,
interleaved passes in one process."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from lresizervit.bench.machine import machine_description
from lresizervit.config import Config
from lresizervit.data.schema import check_images, read_table


def bench_loader(cfg: Config, n_images: int = 256, repeats: int = 3) -> dict:

    from lresizervit.data.pipeline import decode_benchmark_dataset, make_dataset, measure_images_per_second

    data_dir = Path(cfg.data.dir)
    task = cfg.task
    train = read_table(data_dir / "train.csv", "train", task).iloc[:n_images]
    paths = check_images(train, data_dir, "train", str(data_dir / "train.csv"), task)
    meta = train[task.metadata_columns].to_numpy("float32")
    target = train[task.target_column].to_numpy("float32")
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
    from lresizervit.training.preflight import tfrecords_root

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
            "batch_size": bs, "repeats": repeats, "machine": machine_description(), "pipelines": rows}


def format_markdown(result: dict) -> str:
    """A one-line description and the markdown table of a `bench_loader` result."""
    lines = [f"{result['images']} images of {result['data_dir']} at {result['image_size']} px, batch "
             f"{result['batch_size']}, median of {result['repeats']} passes after a warm-up pass "
             f"({result['machine']})", "", "| pipeline | images/s | vs plain |", "|---|---:|---:|"]
    for name, row in result["pipelines"].items():
        lines.append(f"| {name} | {row['images_per_second']:.0f} | {row['ratio_to_plain']:.2f}x |")
    return "\n".join(lines)
