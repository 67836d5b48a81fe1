"""`python -m lresizervit bench`: what the pipeline and the model cost, each figure a median of repeats
after a warm-up, every comparison measured side by side.

- loader: the loader's images/s against a plain decode_jpeg + resize over the same files, interleaved
  passes in one process;
- step: seconds per train step and peak memory per resizer mode and input size (each variant in its own
  process, so its peak memory is its own), with the step's FLOPs and its achieved FLOP/s against a large
  matmul measured in the same process;
- efficiency: the same for the learned resizer in float32 and mixed_bfloat16;
- predict: images/s of fold models x TTA views on a trained experiment;
- replicas: the train step with 1 and 2 replicas on the same global batch.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
from pathlib import Path

from lresizervit.config import Config
from lresizervit.data.schema import META_COLUMNS, TARGET, check_images, read_table


def bench_loader(cfg: Config, n_images: int = 256, repeats: int = 3) -> dict:

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
        from lresizervit.data.records.reader import make_tfrecord_dataset

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


STEP_TIMEOUT_S = 3600
# Ops whose FLOPs are counted: the contractions (matmuls, convolutions, einsums). Element-wise ops, norms,
# softmax and resizes are left out: they are memory-bound, a few % of the total, and no peak figure applies.
CONTRACTION_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D",
                   "DepthwiseConv2dNative")


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
    return f"{model}, {platform.machine()}, {os.cpu_count()} cores{accel}, TensorFlow {tf.__version__}"


def _einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> int:
    """2 x the product of every index's size: each output element sums over the contracted indices."""
    inputs, _ = equation.replace(" ", "").split("->")
    sizes: dict[str, int] = {}
    for spec, shape in zip(inputs.split(","), shapes, strict=True):
        if "..." in spec:
            n_ell = len(shape) - (len(spec) - 3)
            ell = [f"@{i}" for i in range(n_ell)]  # ellipsis axes, aligned from the right as in broadcasting
            labels = [*spec[:spec.index("...")], *ell, *spec[spec.index("...") + 3:]]
        else:
            labels = list(spec)
        for label, dim in zip(labels, shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), int(dim))
    total = 2
    for dim in sizes.values():
        total *= dim
    return total


def op_flops(op) -> int:
    """FLOPs (multiply and add counted separately) of one contraction op with static shapes, else 0."""
    shape = [list(t.shape) for t in op.inputs]
    out = list(op.outputs[0].shape) if op.outputs else []
    if any(d is None for s in [*shape, out] for d in s):
        raise ValueError(f"op {op.name} ({op.type}) has a dynamic shape; trace with a fixed batch size")
    n_out = 1
    for d in out:
        n_out *= d
    if op.type == "MatMul":
        k = shape[0][0] if op.get_attr("transpose_a") else shape[0][1]
        return 2 * n_out * k
    if op.type.startswith("BatchMatMul"):
        k = shape[0][-2] if op.get_attr("adj_x") else shape[0][-1]
        return 2 * n_out * k
    if op.type == "Conv2D":  # filter [kh, kw, in / groups, out]
        kh, kw, cin, _ = shape[1]
        return 2 * n_out * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":  # filter [kh, kw, in, multiplier]
        kh, kw = shape[1][:2]
        return 2 * n_out * kh * kw
    if op.type == "Einsum":
        return _einsum_flops(op.get_attr("equation").decode(), [tuple(s) for s in shape])
    return 0


def graph_flops(graph) -> dict:
    """Contraction FLOPs of a traced graph, in total and by op type (nested function bodies included)."""
    by_type: dict[str, int] = {}

    def visit(g):
        for op in g.get_operations():
            if op.type in CONTRACTION_OPS:
                by_type[op.type] = by_type.get(op.type, 0) + op_flops(op)
        for fn in getattr(g, "_functions", {}).values():
            inner = getattr(fn, "graph", None)
            if inner is not None:
                visit(inner)

    visit(graph)
    return {"total": sum(by_type.values()), "by_op": by_type}


def model_flops(model, inputs) -> dict:
    """FLOPs of one forward pass of `model` on `inputs` (one batch, fixed shapes), counted on its traced
    graph; a train step is taken as 3x that (the backward pass does two contractions per forward one)."""
    import tensorflow as tf

    spec = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)), inputs)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph
    counted = graph_flops(graph)
    return {"forward_flops": counted["total"], "train_step_flops": 3 * counted["total"],
            "forward_flops_by_op": counted["by_op"], "tf_profiler_forward_flops": _tf_profiler_flops(graph)}


def _tf_profiler_flops(graph) -> int | None:
    """TF's own float-op count of the graph, for reference: it includes element-wise ops but counts 0 for
    Einsum (Keras' attention scores and weighted sums), so it under-counts attention."""
    try:
        from tensorflow.python.profiler import model_analyzer, option_builder
        from tensorflow.python.util import deprecation

        opts = option_builder.ProfileOptionBuilder(
            option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        with deprecation.silence():  # it is a TF1 API and says so on every call
            return int(model_analyzer.profile(graph, options=opts).total_float_ops)
    except Exception:  # a private API: its absence must not fail the benchmark
        return None


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


def _rss_mib() -> float:
    """Current resident memory of this process (Linux), for "static" memory before the first step."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _step_worker(cfg_dict: dict, mode: str, image_size: int, steps: int, batch: int, matmul_n: int | None,
                 queue) -> None:
    """Runs in its own process, so its peak memory is the variant's own."""
    import resource
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from lresizervit.config import config_from_dict
    from lresizervit.models.regressor import build_regressor, make_loss

    try:
        cfg = config_from_dict(cfg_dict)
        cfg.model.resizer.mode = mode
        gpu = bool(tf.config.list_physical_devices("GPU"))
        keras.mixed_precision.set_global_policy(cfg.train.precision)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = build_regressor(cfg.model, image_size)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=make_loss(cfg.model))
        model.optimizer.build(model.trainable_variables)
        static_mib = _rss_mib()  # weights + optimizer state + runtime, before any activation exists
        if gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        rng = np.random.default_rng(0)
        x = {"image": rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8),
             "metadata": rng.integers(0, 2, (batch, len(META_COLUMNS))).astype("float32")}
        y = rng.uniform(1, 100, batch).astype("float32")
        model.train_on_batch(x, y)  # trace + first step: not timed
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
        result = {
            "mode": mode,
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
        if gpu:
            result["peak_gpu_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        result.update(model_flops(model, x))
        result["achieved_flops_per_second"] = result["train_step_flops"] / result["step_seconds"]
        compute = keras.mixed_precision.global_policy().compute_dtype
        result["matmul"] = {dt: measure_matmul_flops(dt, matmul_n) for dt in dict.fromkeys((compute, "float32"))}
        result["matmul_dtype"] = compute
        result["fraction_of_matmul"] = (result["achieved_flops_per_second"]
                                        / result["matmul"][compute]["flops_per_second"])
        queue.put(result)
    except BaseException as exc:  # the parent must hear of a failure, not wait for a timeout
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


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


def default_step_variants(cfg: Config) -> list[tuple[str, int]]:
    """The issue's set: each mode at the config's size, then the learned resizer (and the plain resize, its
    reference) at larger inputs, to show how the cost grows with resolution."""
    s = cfg.data.image_size
    larger = [size for size in (768, 1024) if size > s]
    return ([("learned", s), ("bilinear", s), ("none", s)] + [("learned", size) for size in larger]
            + [("bilinear", size) for size in larger[-1:]])


def _run_variant(tree: dict, mode: str, size: int, steps: int, batch: int, matmul_n: int | None) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step_worker, args=(tree, mode, size, steps, batch, matmul_n, queue))
    proc.start()
    try:
        # A worker killed by the OOM killer never answers: do not wait for it forever.
        result = queue.get(timeout=STEP_TIMEOUT_S)
    except Exception as exc:
        proc.kill()
        raise RuntimeError(f"bench step: variant {mode}@{size} gave no result (exit code {proc.exitcode}); "
                           f"out of memory?") from exc
    proc.join()
    if "error" in result:
        raise RuntimeError(f"bench step: variant {mode}@{size} failed: {result['error']}")
    return result


def variant_name(mode: str, size: int, target: int, precision: str) -> str:
    seen = size if mode == "none" else target
    return f"{mode} {size}->{seen}" + ("" if precision == "float32" else f" {precision}")


def bench_step(cfg: Config, batch: int = 4, steps: int = 3, variants: list[tuple[str, int]] | None = None,
               precisions: tuple[str, ...] | None = None, rounds: int = 1, matmul_n: int | None = None) -> dict:
    """Seconds per train step, peak memory and FLOP/s for each (mode, input size, precision), each in a fresh
    process, one after the other; with rounds > 1 the whole list runs again (interleaved, so a slow moment
    of the machine hits every variant alike) and the median is over every round's steps."""
    variants = variants or default_step_variants(cfg)
    precisions = precisions or (cfg.train.precision,)
    rows: dict[str, dict] = {}
    for _ in range(rounds):
        for precision in precisions:
            for mode, size in variants:
                tree = cfg.to_dict()
                tree["train"]["precision"] = precision
                result = _run_variant(tree, mode, size, steps, batch, matmul_n)
                name = variant_name(mode, size, cfg.model.resizer.target_size, precision)
                if name in rows:
                    # Another round: pool the step times; memory and FLOPs do not change between rounds.
                    old = rows[name]
                    old["step_seconds_runs"] += result["step_seconds_runs"]
                    old["step_seconds"] = statistics.median(old["step_seconds_runs"])
                    for key in ("peak_rss_mib", "peak_gpu_mib"):
                        if key in result:
                            old[key] = max(old[key], result[key])
                    for dt, m in result["matmul"].items():
                        old["matmul"][dt]["seconds_runs"] += m["seconds_runs"]
                        old["matmul"][dt]["flops_per_second"] = (
                            2 * m["n"] ** 3 / statistics.median(old["matmul"][dt]["seconds_runs"]))
                    old["achieved_flops_per_second"] = old["train_step_flops"] / old["step_seconds"]
                    old["fraction_of_matmul"] = (old["achieved_flops_per_second"]
                                                 / old["matmul"][old["matmul_dtype"]]["flops_per_second"])
                else:
                    rows[name] = result
    base = next(iter(rows.values()))["step_seconds"]
    for row in rows.values():
        row["step_time_vs_first"] = row["step_seconds"] / base
    return {"what": "step", "backbone": cfg.model.backbone.name, "target_size": cfg.model.resizer.target_size,
            "batch": batch, "steps": steps, "rounds": rounds, "flops_counting": FLOPS_COUNTING,
            "machine": machine_description(), "variants": rows, "comparisons": step_comparisons(rows, cfg)}


FLOPS_COUNTING = ("contraction FLOPs (MatMul, BatchMatMul, Einsum, Conv2D; multiply and add counted "
                  "separately) of the traced forward graph, x3 for forward + backward")


def step_comparisons(rows: dict[str, dict], cfg: Config) -> dict:
    """The issue's ratios, where both sides were measured."""
    s, t = cfg.data.image_size, cfg.model.resizer.target_size
    out = {}
    for precision in dict.fromkeys(r["precision"] for r in rows.values()):
        def get(mode, size, precision=precision):
            return rows.get(variant_name(mode, size, t, precision))

        learned, bilinear, none = get("learned", s), get("bilinear", s), get("none", s)
        tag = "" if precision == "float32" else f" ({precision})"
        if learned and none:
            out[f"none {s} / learned {s}->{t}: step time{tag}"] = none["step_seconds"] / learned["step_seconds"]
            out[f"learned {s}->{t} / none {s}: peak memory{tag}"] = learned["peak_rss_mib"] / none["peak_rss_mib"]
            out[f"learned {s}->{t} / none {s}: peak minus static memory{tag}"] = (
                (learned["peak_rss_mib"] - learned["static_rss_mib"])
                / (none["peak_rss_mib"] - none["static_rss_mib"]))
        if learned and bilinear:
            out[f"learned / bilinear {s}->{t}: step time{tag}"] = learned["step_seconds"] / bilinear["step_seconds"]
        for size in (768, 1024):
            big = get("learned", size)
            if big and bilinear:
                out[f"learned {size}->{t} / bilinear {s}->{t}: step time{tag}"] = (
                    big["step_seconds"] / bilinear["step_seconds"])
            if big and get("bilinear", size):
                out[f"learned / bilinear {size}->{t}: step time{tag}"] = (
                    big["step_seconds"] / get("bilinear", size)["step_seconds"])
    return out


def bench_predict(cfg: Config, repeats: int = 3, ttas: tuple[str, ...] | None = None) -> dict:
    """Test images/s of a trained experiment for 1 and all fold models x each TTA mode, on decoded images
    held in memory (so the figures are the models' cost), plus one end-to-end pass that decodes."""
    import time

    import tensorflow as tf

    from lresizervit.data.pipeline import make_dataset
    from lresizervit.inference.predict import fold_models
    from lresizervit.models.regressor import load_model
    from lresizervit.models.tta import TTA_MODES, predict_models, tta_views

    ttas = ttas or TTA_MODES
    data_dir = Path(cfg.data.dir)
    test = read_table(data_dir / "test.csv", "test")
    paths = check_images(test, data_dir / "test", str(data_dir / "test.csv"))
    meta = test[list(META_COLUMNS)].to_numpy("float32")
    models = [load_model(p) for p in fold_models(cfg.run_dir)]

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
        predict_models(models[:k], ds, tta)
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
    """A one-line description and the markdown table of a bench result."""
    what = result["what"]
    if what == "loader":
        lines = [f"{result['images']} images of {result['data_dir']} at {result['image_size']} px, batch "
                 f"{result['batch_size']}, median of {result['repeats']} passes after a warm-up pass "
                 f"({result['machine']})", "", "| pipeline | images/s | vs plain |", "|---|---:|---:|"]
        for name, row in result["pipelines"].items():
            lines.append(f"| {name} | {row['images_per_second']:.0f} | {row['ratio_to_plain']:.2f}x |")
        return "\n".join(lines)
    if what == "replicas":
        lines = [f"train step of {result['backbone']}, global batch {result['batch']}, median of 3 passes of "
                 f"{result['steps']} steps ({result['machine']})", "",
                 "| replicas | devices | s/step | vs 1 replica |", "|---|---|---:|---:|"]
        for name, row in result["variants"].items():
            lines.append(f"| {name} | {row['devices']} | {row['step_seconds']:.3f} | "
                         f"{row['step_time_vs_first']:.2f}x |")
        return "\n".join(lines)
    if what == "predict":
        lines = [f"{result['images']} test images of {result['run_dir']} at {result['image_size']} px, batch "
                 f"{result['batch_size']}, median of {result['repeats']} passes after a warm-up pass; decoded "
                 f"images held in memory unless said ({result['machine']})", "",
                 "| folds x TTA | model calls per image | images/s | vs first |", "|---|---:|---:|---:|"]
        for name, row in result["variants"].items():
            lines.append(f"| {name} | {row['folds'] * row['views']} | {row['images_per_second']:.1f} | "
                         f"{row['vs_first']:.2f}x |")
        return "\n".join(lines)
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
            "precision": cfg.train.precision, "machine": machine_description(), "variants": rows}
