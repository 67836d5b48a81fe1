"""The `bench` command's flags: checked, turned into one benchmark's call, its result into a table."""

from __future__ import annotations

import os

from lresizervit.bench import loader, predict, predict_memory, replicas, step
from lresizervit.config import Config

EFFICIENCY_PRECISIONS = ("float32", "mixed_bfloat16")


def check_args(args) -> None:
    """Refuse a bad flag before the config is read or anything is measured."""
    from lresizervit.config import CHOICES

    for flag in ("batch", "steps", "images", "repeats", "rounds"):
        if getattr(args, flag) < 1:
            raise ValueError(f"bench --{flag} must be at least 1, got {getattr(args, flag)}")
    if args.what == "replicas" and os.environ.get("KERAS_BACKEND") == "jax":
        raise ValueError("bench --what replicas times tf.distribute replicas (TensorFlow); under KERAS_BACKEND=jax "
                         "the two-device check is in tests/test_jax.py (two devices reproduce one)")
    if args.backends:
        bad = [b for b in args.backends.split(",") if b.strip() not in ("tensorflow", "jax")]
        if bad:
            raise ValueError(f"--backends: {bad[0]!r} is not a Keras backend this project runs on (tensorflow, jax)")
        if args.what not in ("step", "efficiency"):
            raise ValueError(f"--backends applies to --what step and efficiency, not {args.what}")
        if "jax" in args.backends:
            import importlib.util

            if importlib.util.find_spec("jax") is None:
                raise ValueError("--backends names jax, which is not installed here: pip install -e '.[jax]'")
    if getattr(args, "test_images", None):
        if args.what != "predict":
            raise ValueError(f"--test-images is a flag of --what predict, not of --what {args.what}")
        predict_memory.parse_counts(args.test_images)
    if args.precisions:
        bad = [p for p in args.precisions.split(",") if p.strip() not in CHOICES["train.precision"]]
        if bad:
            raise ValueError(f"--precisions: {bad[0]!r} is not a train.precision "
                             f"({', '.join(CHOICES['train.precision'])})")


def _run_step(cfg: Config, args) -> dict:
    """`step`, or `efficiency`: the same measurement of the learned resizer in float32 and mixed_bfloat16."""
    efficiency = args.what == "efficiency"
    size = cfg.data.image_size
    variants = step.parse_variants(args.variants, size) if args.variants else (
        [("learned", size)] if efficiency else None)
    step.check_variants(variants or [], cfg.model.resizer.target_size)
    precisions = tuple(p.strip() for p in args.precisions.split(",")) if args.precisions else (
        EFFICIENCY_PRECISIONS if efficiency else None)
    backends = tuple(dict.fromkeys(b.strip() for b in args.backends.split(","))) if args.backends else None
    return step.bench_step(cfg, batch=args.batch, steps=args.steps, variants=variants, precisions=precisions,
                           rounds=args.rounds, matmul_n=args.matmul_size, backends=backends)


def _run_predict(cfg: Config, args) -> dict:
    from lresizervit.run import trained_config

    # The experiment's own config rebuilds nothing here, but says how it was trained (image size, TTA);
    # where the data lives and the predict settings come from now, as in `predict`.
    if getattr(args, "test_images", None):
        return predict_memory.bench_predict_memory(trained_config(cfg),
                                                   predict_memory.parse_counts(args.test_images))
    return predict.bench_predict(trained_config(cfg), repeats=args.repeats)


def _format_predict(result: dict) -> str:
    if result["what"] == "predict-memory":
        return predict_memory.format_markdown(result)
    return predict.format_markdown(result)


BENCHES = {
    "loader": (lambda cfg, args: loader.bench_loader(cfg, n_images=args.images, repeats=args.repeats),
               loader.format_markdown),
    "step": (_run_step, step.format_markdown),
    "efficiency": (_run_step, step.format_markdown),
    "predict": (_run_predict, _format_predict),
    "replicas": (lambda cfg, args: replicas.bench_replicas(cfg, batch=args.batch, steps=args.steps),
                 replicas.format_markdown),
}


def run_bench(cfg: Config, args) -> tuple[dict, str]:
    """The benchmark `args.what` names, run on `cfg` (flags already through `check_args`): its raw figures
    and its markdown table."""
    run, format_markdown = BENCHES[args.what]
    result = run(cfg, args)
    return result, format_markdown(result)
