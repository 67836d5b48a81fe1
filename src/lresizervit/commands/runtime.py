"""`env`: the runtime and whether it meets lresizervit's declared version range, and closing the gap with
wheels installed without their dependencies (how the Kaggle images are used); `convert`: rewrite an
experiment's fold archives (`model.keras`) as the model files every supported Keras reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _devices() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = [f"{d.platform}:{d.id}" for d in jax.devices()]
    else:
        import tensorflow as tf

        found = [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices()]
    return f"keras backend {backend}: {', '.join(found)}"


def cmd_env(args) -> int:
    from lresizervit.kaggle_io import bootstrap as boot

    for line in boot.runtime_lines():
        print(line)
    keras_hub = True
    if args.config:
        from lresizervit.commands.common import config

        keras_hub = config(args).model.backbone.name.startswith("keras_hub:")
    reqs = boot.needed(boot.installed_requirements(), keras_hub=keras_hub, training=not args.predict_only)
    wheels = boot.find_wheels(*[Path(w) for w in args.wheels or ()])
    gaps = boot.gaps(reqs, wheels)
    if gaps and args.install:
        shipped = [g.wheel for g in gaps if g.wheel is not None]
        boot.install(shipped)
        online = [g for g in gaps if g.wheel is None and boot.canonicalize_name(g.requirement.name)
                  not in boot.NEVER_REPLACED and not args.wheels]
        for gap in online:  # no --wheels given: from the package index (a notebook with the internet on)
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", str(gap.requirement)]
            print(" ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                print(f"error: `{' '.join(cmd)}` failed (its output is above)", file=sys.stderr)
                return 1
        gaps = boot.gaps(reqs, [])
    for req in reqs:
        got = boot.installed_version(req.name)
        state = "MISSING" if got is None else ("ok" if not any(g.requirement is req for g in gaps) else "OUT OF RANGE")
        print(f"  {req.name}{req.specifier}: {got[1] if got else '-'} {state}")
    if gaps:
        where = "in --wheels" if args.wheels else "(no --wheels given)"
        for gap in gaps:
            print(boot.gap_error(gap, where), file=sys.stderr)
        return 1
    try:
        print(_devices())
    except ImportError as exc:  # a backend selected by KERAS_BACKEND that is not installed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("the runtime meets lresizervit's requirements")
    return 0


def cmd_convert(args) -> None:
    from lresizervit.models.fold_model import convert_experiment

    results = convert_experiment(args.experiment, keep_archive=args.keep_archives)
    if not results:
        print(f"{args.experiment}: every fold is already in the portable format; nothing to do")
    for r in results:
        print(f"fold {r['fold']}: model.keras ({r['archive_bytes']:,} bytes) -> model.weights.h5 "
              f"({r['weights_bytes']:,} bytes) + model.json; predictions within {r['max_abs_difference']:.2g}")


def register(sub) -> None:
    sp = sub.add_parser("env", help="print the runtime (Python, TensorFlow, Keras, keras-hub, JAX, accelerators) "
                        "and check it against lresizervit's declared version range")
    sp.add_argument("config", nargs="?", help="an experiment YAML: keras-hub is needed only for a keras_hub: "
                    "backbone (default: checked)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    sp.add_argument("--predict-only", action="store_true", help="check what prediction needs (no tensorboard)")
    sp.add_argument("--install", action="store_true", help="install what is missing or out of range, without "
                    "its dependencies and never TensorFlow, Keras or JAX: from --wheels, else from the index")
    sp.add_argument("--wheels", action="append", metavar="DIR", help="a folder of wheels to install from, "
                    "offline (repeatable)")
    sp.set_defaults(func=cmd_env)
    sp = sub.add_parser("convert", help="rewrite an experiment's fold archives (model.keras, written before "
                        "model.weights.h5 + model.json) in the format every supported Keras reads")
    sp.add_argument("experiment", help="the experiment folder (models/<exp>) or its config YAML")
    sp.add_argument("--keep-archives", action="store_true", help="keep each model.keras after converting it")
    sp.set_defaults(func=cmd_convert)
