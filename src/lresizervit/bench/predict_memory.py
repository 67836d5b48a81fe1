"""`bench --what predict --test-images 1000,10000`: peak memory and time per 1,000 photos of the whole
`predict` command (test.csv read, fold models loaded, every photo decoded and predicted with the TTA views,
submission written and checked) for the first N rows of the test set, each N in its own fresh process.

The hidden test set's size is not known in advance (about 6,800 rows for Pawpularity), so prediction must
stream it: peak memory flat in N, time linear in it. Each N runs in its own process so its high-water mark
is its own, read from /proc/self/status (VmHWM) at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from lresizervit.bench.machine import machine_description
from lresizervit.bench.runner import run_in_process
from lresizervit.config import Config
from lresizervit.data.schema import read_table


def parse_counts(text: str) -> list[int]:
    """"1000,10000" -> [1000, 10000]; each a positive integer."""
    counts = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--test-images: {item!r} is not a positive whole number of test images")
        counts.append(int(item))
    if not counts:
        raise ValueError("--test-images: no count given")
    return counts


def _subset_data_dir(data_dir: Path, n: int, dest: Path, test_csv_name: str = "test.csv") -> Path:
    """`dest` as a data folder whose test.csv holds the first `n` rows of `data_dir`'s; every other entry
    (the image folders, train.csv, test_labels.csv) is a symlink to the original, so nothing is copied."""
    dest.mkdir(parents=True)
    for entry in data_dir.iterdir():
        if entry.name != test_csv_name:
            (dest / entry.name).symlink_to(entry.resolve())
    # Read as strings, so the kept rows hold exactly the original values (no number re-formatted).
    rows = pd.read_csv(data_dir / test_csv_name, dtype=str, keep_default_na=False)
    rows.iloc[:n].to_csv(dest / test_csv_name, index=False)
    return dest


def _predict_worker(cfg_dict: dict, data_dir: str, out_csv: str) -> dict:
    """Runs in its own process: the predict command's own function on `data_dir`, and this process's peak
    memory and times."""
    import time

    t0 = time.perf_counter()
    # What any prediction pays before it reads a photo: the runtime and the package's imports.
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    from lresizervit.bench.machine import measure_matmul_flops, peak_rss_mib, rss_mib
    from lresizervit.config import config_from_dict
    from lresizervit.data import pipeline  # noqa: F401
    from lresizervit.inference.ensemble import run_ensemble
    from lresizervit.models import regressor  # noqa: F401

    runtime_mib = rss_mib()
    t1 = time.perf_counter()
    summary = run_ensemble([config_from_dict(cfg_dict)], data_dir, out_csv)
    total = time.perf_counter() - t1
    peak = peak_rss_mib()
    # How fast this machine was just now (a shared CPU's speed varies from run to run): the yardstick to
    # read the times against.
    matmul = measure_matmul_flops("float32", n=1024, repeats=5)
    n = summary["n_test"]
    return {"test_images": n, "peak_rss_mib": peak, "runtime_rss_mib": runtime_mib,
            "matmul_gflops": matmul["flops_per_second"] / 1e9,
            "end_rss_mib": rss_mib(), "predict_seconds": summary["seconds"],
            "seconds_per_1000": 1000 * summary["seconds"] / n, "images_per_second": summary["images_per_second"],
            "load_seconds": sum(e["load_seconds"] for e in summary["experiments"]),
            "command_seconds": total, "import_seconds": t1 - t0, "models": summary["models"],
            "tta_views": summary["tta_views"]}


def bench_predict_memory(cfg: Config, counts: list[int]) -> dict:
    """For each N of `counts` (in that order), `predict` on the first N test rows in a fresh process."""
    data_dir = Path(cfg.data.dir)
    test_csv = data_dir / "test.csv"
    n_test = len(read_table(test_csv, "test", cfg.task))
    if max(counts) > n_test:
        raise ValueError(f"{test_csv}: {n_test} rows, but --test-images asks for {max(counts)}; make a larger "
                         "test set (python -m lresizervit synth --out DIR --test N) and pass "
                         "--set data.dir=DIR")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_memory_") as tmp:
        for i, n in enumerate(counts):
            sub = _subset_data_dir(data_dir, n, Path(tmp) / f"{i}_{n}")
            rows.append(run_in_process(_predict_worker, (cfg.to_dict(), str(sub), str(sub / "submission.csv")),
                                       f"bench predict: {n} test images"))
    base = rows[0]
    for row in rows:
        row["peak_vs_first"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        row["time_per_image_vs_first"] = row["seconds_per_1000"] / base["seconds_per_1000"]
    return {"what": "predict-memory", "run_dir": str(cfg.run_dir), "data_dir": str(data_dir),
            "image_size": cfg.data.image_size, "batch_size": cfg.predict.batch_size, "tta": cfg.predict.tta,
            "backbone": cfg.model.backbone.name, "machine": machine_description(), "rows": rows}


def format_markdown(result: dict) -> str:
    """A one-line description and the markdown table of a `bench_predict_memory` result."""
    first = result["rows"][0]
    lines = [f"`predict` of {result['run_dir']} ({result['backbone']}, {first['models']} fold model(s) x "
             f"{first['tta_views']} TTA view(s), {result['image_size']} px, batch {result['batch_size']}) on the "
             f"first N photos of {result['data_dir']}, each N in its own process ({result['machine']})", "",
             "| test images | peak RSS MiB | vs first | RSS after imports MiB | s per 1,000 photos | images/s "
             "| model load s | matmul GFLOP/s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['test_images']:,} | {r['peak_rss_mib']:,.0f} | {r['peak_vs_first']:.3f} | "
                     f"{r['runtime_rss_mib']:,.0f} | {r['seconds_per_1000']:.1f} | {r['images_per_second']:.1f} | "
                     f"{r['load_seconds']:.1f} | {r['matmul_gflops']:.0f} |")
    lines += ["", "Peak RSS: the process's VmHWM, so it includes the TensorFlow runtime and the models; s per "
              "1,000 photos: decoding, TTA views and every fold model, not the model load; matmul GFLOP/s: a 1024^3 "
              "float32 matmul in the same process just after, how fast the machine was at that moment."]
    return "\n".join(lines)
