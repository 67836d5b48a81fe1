"""`bench --what step` (and `efficiency`, the same measurement in two precisions): seconds per train step
and peak memory per resizer mode, input size and precision, each variant in its own process (so its peak
memory is its own), with the step's FLOPs and its achieved FLOP/s against a large matmul measured in the
same process."""

from __future__ import annotations

import statistics

from lresizervit.bench.flops import FLOPS_COUNTING, model_flops
from lresizervit.bench.machine import machine_description, measure_matmul_flops, rss_mib
from lresizervit.bench.runner import run_in_process
from lresizervit.config import Config
from lresizervit.task import Task


def random_batch(task: Task, batch: int, image_size: int, seed: int = 0):
    """A batch of random pixels, 0/1 metadata and targets in the task's range: what a train step costs does
    not depend on the values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = {"image": rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (batch, len(task.metadata_columns))).astype("float32")}
    return x, rng.uniform(task.lo, task.hi, batch).astype("float32")


def _step_worker(cfg_dict: dict, mode: str, image_size: int, steps: int, batch: int,
                 matmul_n: int | None) -> dict:
    """Runs in its own process (on the backend its KERAS_BACKEND names), so its peak memory is its own."""
    import resource
    import time

    import keras
    import tensorflow as tf

    from lresizervit.config import config_from_dict
    from lresizervit.models.regressor import build_regressor, make_loss

    cfg = config_from_dict(cfg_dict)
    cfg.model.resizer.mode = mode
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        gpu = device.platform == "gpu"
    else:
        gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_regressor(cfg.model, image_size, cfg.task)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=make_loss(cfg.model, cfg.task))
    model.optimizer.build(model.trainable_variables)
    static_mib = rss_mib()  # weights + optimizer state + runtime, before any activation exists
    if gpu and backend == "tensorflow":
        tf.config.experimental.reset_memory_stats("GPU:0")
    x, y = random_batch(cfg.task, batch, image_size)
    model.train_on_batch(x, y)  # trace + first step: not timed
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    result = {
        "mode": mode,
        "backend": backend,
        "image_size": image_size,
        "backbone_size": image_size if mode == "none" else cfg.model.resizer.target_size,
        "precision": cfg.train.precision,
        "parameters": int(model.count_params()),
        "step_seconds": statistics.median(times),
        "step_seconds_runs": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "static_rss_mib": static_mib,
        "rss_before_model_mib": rss_before / 1024,
    }
    if gpu and backend == "jax":
        result["peak_gpu_mib"] = device.memory_stats()["peak_bytes_in_use"] / 2**20
    elif gpu:
        result["peak_gpu_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    # FLOPs are counted on a traced TF graph; the same model's on JAX are the same math (the caller copies
    # them from a TensorFlow process).
    result.update(model_flops(model, x) if backend == "tensorflow" else {})
    compute = keras.mixed_precision.global_policy().compute_dtype
    result["matmul"] = {dt: measure_matmul_flops(dt, matmul_n) for dt in dict.fromkeys((compute, "float32"))}
    result["matmul_dtype"] = compute
    return result


def _flops_worker(cfg_dict: dict, mode: str, image_size: int, batch: int) -> dict:
    """The FLOPs of a variant, counted in a TensorFlow process (for a variant measured on JAX only)."""
    import keras

    from lresizervit.config import config_from_dict
    from lresizervit.models.regressor import build_regressor

    cfg = config_from_dict(cfg_dict)
    cfg.model.resizer.mode = mode
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    model = build_regressor(cfg.model, image_size, cfg.task)
    return model_flops(model, random_batch(cfg.task, batch, image_size)[0])


def _add_achieved(row: dict) -> None:
    row["achieved_flops_per_second"] = row["train_step_flops"] / row["step_seconds"]
    row["fraction_of_matmul"] = row["achieved_flops_per_second"] / row["matmul"][row["matmul_dtype"]]["flops_per_second"]


def parse_variants(text: str, default_size: int) -> list[tuple[str, int]]:
    """"learned@512,none,bilinear@1024" -> [("learned", 512), ("none", default_size), ("bilinear", 1024)]."""
    from lresizervit.config import CHOICES

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        mode, _, size = item.partition("@")
        if mode not in CHOICES["model.resizer.mode"]:
            raise ValueError(f"--variants: {mode!r} is not a model.resizer.mode "
                             f"({', '.join(CHOICES['model.resizer.mode'])})")
        if size and not size.isdigit():
            raise ValueError(f"--variants: {item!r}: the size after @ must be an integer number of pixels")
        size = int(size) if size else default_size
        if size <= 0:
            raise ValueError(f"--variants: {item!r}: the size must be positive")
        out.append((mode, size))
    if not out:
        raise ValueError("--variants: no variant given")
    return out


def check_variants(variants: list[tuple[str, int]], target: int) -> None:
    """The resizer only shrinks: refuse a resized variant whose input is smaller than its output."""
    for mode, px in variants:
        if mode != "none" and px < target:
            raise ValueError(f"--variants: {mode}@{px} is smaller than model.resizer.target_size ({target}): "
                             "the resizer only shrinks")


def default_step_variants(cfg: Config) -> list[tuple[str, int]]:
    """The issue's set: each mode at the config's size, then the learned resizer (and the plain resize, its
    reference) at larger inputs, to show how the cost grows with resolution."""
    s = cfg.data.image_size
    larger = [size for size in (768, 1024) if size > s]
    return ([("learned", s), ("bilinear", s), ("none", s)] + [("learned", size) for size in larger]
            + [("bilinear", size) for size in larger[-1:]])


def variant_name(mode: str, size: int, target: int, precision: str, backend: str | None = None) -> str:
    """`backend`: named only when the run compares backends."""
    seen = size if mode == "none" else target
    return (f"{mode} {size}->{seen}" + ("" if precision == "float32" else f" {precision}")
            + (f" [{backend}]" if backend else ""))


def _pool_round(old: dict, new: dict) -> None:
    """Adds another round's step and matmul times to `old`; memory and FLOPs do not change between rounds."""
    old["step_seconds_runs"] += new["step_seconds_runs"]
    old["step_seconds"] = statistics.median(old["step_seconds_runs"])
    for key in ("peak_rss_mib", "peak_gpu_mib"):
        if key in new:
            old[key] = max(old[key], new[key])
    for dt, m in new["matmul"].items():
        old["matmul"][dt]["seconds_runs"] += m["seconds_runs"]
        old["matmul"][dt]["flops_per_second"] = 2 * m["n"] ** 3 / statistics.median(old["matmul"][dt]["seconds_runs"])
    _add_achieved(old)


def bench_step(cfg: Config, batch: int = 4, steps: int = 3, variants: list[tuple[str, int]] | None = None,
               precisions: tuple[str, ...] | None = None, rounds: int = 1, matmul_n: int | None = None,
               backends: tuple[str, ...] | None = None) -> dict:
    """Seconds per train step, peak memory and FLOP/s for each (mode, input size, precision, backend), each
    in a fresh process, one after the other; with rounds > 1 the whole list runs again (interleaved, so a
    slow moment of the machine hits every variant alike) and the median is over every round's steps.
    `backends` (default: the one Keras runs on here) are "tensorflow" and/or "jax"."""
    from lresizervit.backend import running

    variants = variants or default_step_variants(cfg)
    precisions = precisions or (cfg.train.precision,)
    backends = backends or (running(),)
    named = len(backends) > 1
    rows: dict[str, dict] = {}
    for _ in range(rounds):
        for precision in precisions:
            for mode, size in variants:
                for backend in backends:
                    tree = cfg.to_dict()
                    tree["train"]["precision"] = precision
                    result = run_in_process(_step_worker, (tree, mode, size, steps, batch, matmul_n),
                                            f"bench step: variant {mode}@{size} on {backend}",
                                            env={"KERAS_BACKEND": backend})
                    name = variant_name(mode, size, cfg.model.resizer.target_size, precision,
                                        backend if named else None)
                    if name in rows:
                        _pool_round(rows[name], result)
                    else:
                        rows[name] = result
                        _share_flops(rows, result, tree, batch)
    base = next(iter(rows.values()))["step_seconds"]
    for row in rows.values():
        row["step_time_vs_first"] = row["step_seconds"] / base
    return {"what": "step", "backbone": cfg.model.backbone.name, "target_size": cfg.model.resizer.target_size,
            "batch": batch, "steps": steps, "rounds": rounds, "backends": list(backends),
            "flops_counting": FLOPS_COUNTING, "machine": machine_description(), "variants": rows,
            "comparisons": step_comparisons(rows, cfg, backends if named else (None,))}


def _share_flops(rows: dict[str, dict], new: dict, tree: dict, batch: int) -> None:
    """FLOPs of a JAX row from the TF row of the same variant, else counted in a TF process of its own."""
    if "train_step_flops" not in new:
        same = [r for r in rows.values() if "train_step_flops" in r and r["backend"] == "tensorflow"
                and (r["mode"], r["image_size"], r["precision"]) == (new["mode"], new["image_size"], new["precision"])]
        counted = same[0] if same else run_in_process(
            _flops_worker, (tree, new["mode"], new["image_size"], batch), "bench step: counting FLOPs",
            env={"KERAS_BACKEND": "tensorflow"})
        new.update({k: counted[k] for k in ("forward_flops", "train_step_flops", "forward_flops_by_op",
                                            "tf_profiler_forward_flops")})
    _add_achieved(new)


def step_comparisons(rows: dict[str, dict], cfg: Config, backends: tuple[str | None, ...] = (None,)) -> dict:
    """The issue's ratios, where both sides were measured; with several backends, per backend and between
    them (each variant on JAX over the same on TensorFlow)."""
    s, t = cfg.data.image_size, cfg.model.resizer.target_size
    out = {}
    for precision, backend in ((p, b) for p in dict.fromkeys(r["precision"] for r in rows.values())
                               for b in backends):
        def get(mode, size, precision=precision, backend=backend):
            return rows.get(variant_name(mode, size, t, precision, backend))

        learned, bilinear, none = get("learned", s), get("bilinear", s), get("none", s)
        tag = "" if precision == "float32" and backend is None else \
            " (" + ", ".join(x for x in (precision if precision != "float32" else None, backend) if x) + ")"
        if learned and none:
            out[f"none {s} / learned {s}->{t}: step time{tag}"] = none["step_seconds"] / learned["step_seconds"]
            out[f"learned {s}->{t} / none {s}: peak memory{tag}"] = learned["peak_rss_mib"] / none["peak_rss_mib"]
            out[f"learned {s}->{t} / none {s}: peak minus static memory{tag}"] = (
                (learned["peak_rss_mib"] - learned["static_rss_mib"])
                / (none["peak_rss_mib"] - none["static_rss_mib"]))
        if learned and bilinear:
            out[f"learned / bilinear {s}->{t}: step time{tag}"] = learned["step_seconds"] / bilinear["step_seconds"]
        # A larger input than the config's; at the config's own size these are the ratio above.
        for size in (x for x in (768, 1024) if x != s):
            big = get("learned", size)
            if big and bilinear:
                out[f"learned {size}->{t} / bilinear {s}->{t}: step time{tag}"] = (
                    big["step_seconds"] / bilinear["step_seconds"])
            if big and get("bilinear", size):
                out[f"learned / bilinear {size}->{t}: step time{tag}"] = (
                    big["step_seconds"] / get("bilinear", size)["step_seconds"])
    if "tensorflow" in backends and "jax" in backends:
        for name, row in rows.items():
            if row["backend"] == "jax":
                tf_row = rows.get(name.replace("[jax]", "[tensorflow]"))
                if tf_row:
                    plain = name.replace(" [jax]", "")
                    out[f"{plain}: TensorFlow step time / JAX step time"] = tf_row["step_seconds"] / row["step_seconds"]
    return out


def format_markdown(result: dict) -> str:
    """A one-line description, the markdown table of a `bench_step` result, its comparisons."""
    gpu = any("peak_gpu_mib" in r for r in result["variants"].values())
    mem = "peak GPU MiB" if gpu else "peak RSS MiB"
    lines = [f"train step of {result['backbone']}, batch {result['batch']}, median of {result['steps']} steps "
             f"after one untimed step x {result['rounds']} round(s), each variant in its own process "
             f"({result['machine']})", "",
             f"| variant | parameters | s/step | vs first | {mem} | static MiB | GFLOP/step | achieved GFLOP/s |"
             " matmul GFLOP/s | of matmul |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["variants"].items():
        peak = r["peak_gpu_mib"] if gpu else r["peak_rss_mib"]
        mm = r["matmul"][r["matmul_dtype"]]
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['step_seconds']:.2f} | {r['step_time_vs_first']:.2f}x | "
            f"{peak:,.0f} | {r['static_rss_mib']:,.0f} | {r['train_step_flops'] / 1e9:,.0f} | "
            f"{r['achieved_flops_per_second'] / 1e9:.1f} | {mm['flops_per_second'] / 1e9:.1f} ({mm['dtype']}) | "
            f"{r['fraction_of_matmul']:.2f} |")
    if result.get("comparisons"):
        lines += ["", "| comparison | ratio |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in result["comparisons"].items()]
    lines += ["", f"FLOPs: {result['flops_counting']}."]
    return "\n".join(lines)
