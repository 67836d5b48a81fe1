"""`bench --what predict`: images/s of fold models x TTA views on a trained experiment."""

from __future__ import annotations

import statistics
from pathlib import Path

from lresizervit.bench.machine import machine_description
from lresizervit.config import Config
from lresizervit.data.schema import check_images, read_table


def bench_predict(cfg: Config, repeats: int = 3, ttas: tuple[str, ...] | None = None) -> dict:
    """Test images/s of a trained experiment for 1 and all fold models x each TTA mode, on decoded images
    held in memory (so the figures are the models' cost), plus one end-to-end pass that decodes."""
    import time

    import tensorflow as tf

    from lresizervit.data.pipeline import make_dataset
    from lresizervit.models.fold_model import load_fold_model
    from lresizervit.models.tta import TTA_MODES, predict_models, tta_views
    from lresizervit.run import fold_models

    ttas = ttas or TTA_MODES
    data_dir = Path(cfg.data.dir)
    task = cfg.task
    test = read_table(data_dir / "test.csv", "test", task)
    paths = check_images(test, data_dir, "test", str(data_dir / "test.csv"), task)
    meta = test[task.metadata_columns].to_numpy("float32")
    models = [load_fold_model(p) for p in fold_models(cfg.run_dir)]

    def dataset(cache: bool):
        return make_dataset(paths, meta, None, image_size=cfg.data.image_size, batch_size=cfg.predict.batch_size,
                            training=False, cache=cache)

    cached = dataset(True)
    for _ in cached:  # fill the cache
        pass
    combos = {}
    for k in dict.fromkeys((1, len(models))):
        for tta in ttas:
            combos[f"{k} fold(s) x {tta}"] = (k, tta)
    combos[f"{len(models)} fold(s) x {cfg.predict.tta}, decoding the JPEGs"] = (len(models), cfg.predict.tta)
    runs: dict[str, list[float]] = {name: [] for name in combos}

    def once(name):
        k, tta = combos[name]
        ds = dataset(False) if "decoding" in name else cached
        t0 = time.perf_counter()
        predict_models(models[:k], ds, tta, cfg.task)
        return len(paths) / (time.perf_counter() - t0)

    for name in combos:  # warm-up: tracing, the OS file cache
        once(name)
    for _ in range(repeats):
        for name in combos:
            runs[name].append(once(name))
    base = statistics.median(next(iter(runs.values())))
    rows = {}
    for name, (k, tta) in combos.items():
        ips = statistics.median(runs[name])
        rows[name] = {"folds": k, "tta": tta, "views": len(tta_views(tta)), "images_per_second": ips,
                      "vs_first": ips / base, "runs": runs[name]}
    return {"what": "predict", "run_dir": str(cfg.run_dir), "images": len(paths), "image_size": cfg.data.image_size,
            "batch_size": cfg.predict.batch_size, "repeats": repeats, "machine": machine_description(),
            "tf_version": tf.__version__, "variants": rows}


def format_markdown(result: dict) -> str:
    """A one-line description and the markdown table of a `bench_predict` result."""
    lines = [f"{result['images']} test images of {result['run_dir']} at {result['image_size']} px, batch "
             f"{result['batch_size']}, median of {result['repeats']} passes after a warm-up pass; decoded "
             f"images held in memory unless said ({result['machine']})", "",
             "| folds x TTA | model calls per image | images/s | vs first |", "|---|---:|---:|---:|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['folds'] * row['views']} | {row['images_per_second']:.1f} | "
                     f"{row['vs_first']:.2f}x |")
    return "\n".join(lines)
