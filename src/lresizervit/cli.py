"""`python -m lresizervit <command>`: one command per stage of config → folds → train → cv → predict.

Every command that takes a CONFIG also takes `--set section.key=value` overrides (repeatable).
A bad input ends with one line `error: ...` naming the file, row, column or key, and exit status 2; so does
a file that cannot be written (a full disk), naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = "configs/default.yaml"


def _config(args):
    from lresizervit.config import load_config

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path, tuple(args.set or ()))


def _prediction_configs(args) -> list:
    """The trained experiments' own configs (see `run.experiment_config`), with --tta/--svr applied."""
    from lresizervit.run import experiment_config

    specs = args.experiments or ([DEFAULT_CONFIG] if Path(DEFAULT_CONFIG).is_file() else [])
    if not specs:
        raise ValueError(f"name an experiment (a config YAML or a models/<exp>/ folder); {DEFAULT_CONFIG} "
                         "does not exist here")
    cfgs = []
    for spec in specs:
        cfg = experiment_config(spec, tuple(args.set or ()))
        if args.tta is not None:
            cfg.predict.tta = args.tta
        if args.svr is not None:
            cfg.predict.svr = args.svr
        cfgs.append(cfg)
    return cfgs


def cmd_synth(args) -> None:
    from lresizervit.data.synth import SynthParams, generate
    from lresizervit.task import PAWPULARITY

    given = {"detail_period": args.detail_period, "min_side": args.min_side, "max_side": args.max_side,
             "max_long_side": args.max_long_side, "noise_std": args.noise_std}
    params = SynthParams(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    # The layout (columns, image paths, target range) of the config's task; Pawpularity's without one.
    task = _config(args).task if args.config else PAWPULARITY
    out = Path(args.out)
    if (out / "generator.json").is_file() and not args.force:
        info = json.loads((out / "generator.json").read_text())
        same = info.get("params") == dataclasses.asdict(params) and info.get("n_train") == args.train \
            and info.get("n_test") == args.test \
            and info.get("task", dataclasses.asdict(PAWPULARITY)) == dataclasses.asdict(task)
        if same:
            print(f"{out}: already generated with these settings (use --force to regenerate)")
            return
        raise ValueError(f"{out} holds a data set generated with other settings; use another --out or --force")
    info = generate(out, args.train, args.test, params, workers=args.workers, task=task)
    print(f"wrote {args.train} train + {args.test} test images to {out}: target mean {info['target_mean']:.1f}, "
          f"std {info['target_std']:.1f}; noise floor RMSE {info['noise_floor_rmse']:.2f}, "
          f"constant baseline RMSE {info['constant_baseline_rmse']:.2f}")


def cmd_folds(args) -> None:
    from lresizervit.data.folds import (
        folds_fingerprint,
        keys_missing_from_sidecar,
        make_folds,
        read_folds,
        sidecar_path,
        stale_folds_reasons,
        write_folds,
    )
    from lresizervit.data.schema import read_table
    from lresizervit.io_utils import atomic_write_json
    from lresizervit.task import FOLD

    cfg = _config(args)
    out, task = Path(cfg.data.folds_csv), cfg.task
    train_csv = Path(cfg.data.dir) / "train.csv"
    now = folds_fingerprint(train_csv, cfg.data.n_folds, cfg.data.fold_seed, cfg.data.group_duplicates,
                            cfg.data.merge_duplicates)
    if out.is_file() and args.if_missing:
        _, k = read_folds(out, task)
        diffs = stale_folds_reasons(out, now)
        if diffs:
            raise ValueError(f"{out} was made from other settings or another train.csv ({'; '.join(diffs)}); "
                             f"delete it (and the experiments trained on it) or use another data.folds_csv")
        print(f"{out}: exists ({k} folds); kept")
        if "group_duplicates" in keys_missing_from_sidecar(out, now) and cfg.data.group_duplicates:
            print(f"note: {out} was written before duplicate photos were grouped; delete it to group them")
        return
    train = read_table(train_csv, "train", task)
    groups, duplicates = None, None
    if cfg.data.group_duplicates or cfg.data.merge_duplicates:
        train, groups, duplicates = _duplicate_groups(cfg, train)
    df = make_folds(train, cfg.data.n_folds, cfg.data.fold_seed, task, groups=groups)
    write_folds(df, out, task)
    atomic_write_json(sidecar_path(out), {**now, **({"duplicates": duplicates} if duplicates else {})})
    sizes = df.groupby(FOLD).size().tolist()
    means = df.groupby(FOLD)[task.target_column].mean().round(2).tolist()
    print(f"wrote {out}: {cfg.data.n_folds} folds of {sizes} rows, target means {means}")


def _duplicate_groups(cfg, train):
    """(train, group labels, summary) with the photos hashed (cached beside the folds file); with
    data.merge_duplicates the frame holds one row per group."""
    from lresizervit.data.duplicates import duplicate_groups, group_summary, merge_duplicates
    from lresizervit.data.image_check import cache_path, scan_split
    from lresizervit.data.schema import SchemaError

    train_csv = Path(cfg.data.dir) / "train.csv"
    scan, problems = scan_split(train, cfg.data.dir, "train", cfg.task, cache_path(cfg.data.folds_csv),
                                progress=True)
    if problems:
        raise SchemaError.from_problems(train_csv, problems, max_listed=None,
                                        note="(python -m lresizervit check-data lists every bad image)")
    groups = duplicate_groups(scan.hashes, scan.signatures)
    found = group_summary(train, groups, cfg.task)
    ids = train[cfg.task.id_column].astype(str).to_numpy()
    # The sidecar keeps every group's Ids: with merge_duplicates the folds file no longer holds them all.
    summary = {key: found[key] for key in ("groups", "rows", "max_spread")}
    summary["ids"] = [ids[groups == g].tolist() for g in range(summary["groups"])]
    if summary["groups"]:
        verb = "merged into one row each" if cfg.data.merge_duplicates else "each kept in one fold"
        print(f"duplicate photos: {_count(summary['groups'], 'group')} of {summary['rows']} rows, {verb}")
    if cfg.data.merge_duplicates:
        train, groups = merge_duplicates(train, groups, cfg.task)
    return train, groups, summary


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_tfrecords(args) -> None:
    from lresizervit.data.folds import read_folds
    from lresizervit.data.records.manifest import TFRecordsError, check_matches_frame
    from lresizervit.data.records.writer import write_tfrecords
    from lresizervit.data.schema import check_images, read_table
    from lresizervit.training.trainer import tfrecords_root

    cfg = _config(args)
    data_dir, root = Path(cfg.data.dir), tfrecords_root(cfg)
    jobs = []
    if args.split in ("train", "both"):
        jobs.append(("train", read_folds(cfg.data.folds_csv, cfg.task)[0], cfg.data.folds_csv))
    if args.split in ("test", "both"):
        test_csv = data_dir / "test.csv"
        jobs.append(("test", read_table(test_csv, "test", cfg.task), test_csv))
    for split, df, source in jobs:
        out = root / split
        if args.if_missing:
            try:
                check_matches_frame(out, df, cfg.data.image_size, cfg.task)
                print(f"{out}: up to date; kept")
                continue
            except TFRecordsError:
                pass
        check_images(df, data_dir, split, str(source), cfg.task)
        m = write_tfrecords(df, data_dir, out, cfg.data.image_size, cfg.task, num_shards=args.shards,
                            quality=args.quality, workers=args.workers)
        print(f"wrote {out}: {m['total']} records in {len(m['shards'])} shard(s), "
              f"{sum(s['bytes'] for s in m['shards']) / 2**20:.1f} MiB, folds {m['folds']}")


def cmd_list_folds(args) -> None:
    from lresizervit.data.folds import read_folds

    cfg = _config(args)
    _, k = read_folds(cfg.data.folds_csv, cfg.task)
    print(" ".join(str(i) for i in range(k)))


def cmd_check_data(args) -> None:
    from lresizervit.data.duplicates import duplicate_groups, group_summary
    from lresizervit.data.image_check import cache_path, check_dataset

    cfg = _config(args)
    task = cfg.task
    cache = cache_path(cfg.data.folds_csv)
    check = check_dataset(cfg.data.dir, task, cache, workers=args.workers, progress=True)
    n = sum(len(s.errors) for s in check.scans.values())
    print(f"{cfg.data.dir}: {len(check.train)} train and {len(check.test)} test rows, every image decodes "
          f"({check.decoded} of {n} decoded now in {check.seconds:.1f} s, the others unchanged since {cache})")
    scan = check.scans["train"]
    summary = group_summary(check.train, duplicate_groups(scan.hashes, scan.signatures), task)
    if not summary["groups"]:
        print("duplicate photos: none in train")
        return
    handling = ("merged into one row each (data.merge_duplicates)" if cfg.data.merge_duplicates else
                "each kept in one fold (data.group_duplicates)" if cfg.data.group_duplicates else
                "NOT kept together: data.group_duplicates is false")
    print(f"duplicate photos: {_count(summary['groups'], 'group')} of {summary['rows']} train rows, {handling}; "
          f"{task.target_column} differs by up to {summary['max_spread']:g} inside a group")
    for g in summary["largest_spreads"]:
        pairs = ", ".join(f"{i} ({y:g})" for i, y in zip(g["ids"], g["targets"], strict=True))
        print(f"  spread {g['spread']:g}: {pairs}")


def cmd_weights(args) -> None:
    from lresizervit.weights import BLANK_MARKER, check_backbone, fetch_preset, write_blank_preset

    if args.weights_command == "fetch":
        out = fetch_preset(args.preset, args.out, force=args.force)
        print(f"wrote {out}: point model.backbone.name at it as keras_hub:{out}, or upload it as a Kaggle dataset "
              f"(kaggle datasets create -p {out}) and attach it to the notebook")
    elif args.weights_command == "blank":
        out = write_blank_preset(args.preset, args.out, force=args.force)
        print(f"wrote {out}: the architecture of {args.preset} with RANDOM weights (see {out / BLANK_MARKER}), "
              f"for timing only (bench --set model.backbone.name=keras_hub:{out}); NOT pretrained weights")
    else:
        cfg = _config(args)
        print(f"model.backbone.name {cfg.model.backbone.name!r}: {check_backbone(cfg)}")


def cmd_train(args) -> None:
    from lresizervit.backend import select

    cfg = _config(args)
    select(cfg.train.backend)  # before anything imports Keras: it picks its backend once
    from lresizervit.training.trainer import train_fold

    train_fold(cfg, args.fold, force=args.force)


def _not_chief(cfg) -> bool:
    """Under multi_worker, only the chief writes the experiment's cv.json and report (one writer per file
    on a shared file system); the other workers say so and stop."""
    from lresizervit.training.cluster import multi_worker_task

    task = multi_worker_task(cfg.train.strategy)
    if task is not None and not task[1]:
        print(f"worker {task[0]}: the chief writes {cfg.run_dir}'s cv.json and report")
        return True
    return False


def cmd_cv(args) -> None:
    from lresizervit.inference.predict import format_table
    from lresizervit.run import trained_config, write_cv

    cfg = trained_config(_config(args))
    if _not_chief(cfg):
        return
    if write_cv(cfg) is None:
        message = f"{cfg.run_dir}: not every fold is trained yet; no cv.json written"
        if args.if_complete:
            print(message)
            return
        raise ValueError(message)
    print(format_table(cfg))


def cmd_report(args) -> None:
    from lresizervit.report import write_report
    from lresizervit.run import CV_FILE, trained_config

    # The images may have moved since training; the model settings may not.
    cfg = trained_config(_config(args))
    if _not_chief(cfg):
        return
    if not (cfg.run_dir / CV_FILE).is_file() and args.if_complete:
        print(f"{cfg.run_dir}: no cv.json yet; no report written")
        return
    print(f"wrote {write_report(cfg)} and its figures")


def cmd_predict(args) -> None:
    from lresizervit.backend import select
    from lresizervit.inference.ensemble import default_submission_path, format_members, run_ensemble
    from lresizervit.inference.predict import format_table

    cfgs = _prediction_configs(args)
    # Prediction runs on whatever Keras starts with (a fold trained on one backend predicts on the other);
    # on JAX this keeps the compiled programs for the next run.
    select("auto")
    first = cfgs[0]
    summary = run_ensemble(cfgs, args.data_dir or first.data.dir, args.out or default_submission_path(cfgs))
    if len(summary["members"]) == 1:
        print(format_table(first, summary))
        return
    print(format_members(summary))
    if "test_rmse" in summary:
        print(f"hidden-test RMSE of the submission: {summary['test_rmse']:.3f}")
    print(f"submission: {summary['submission']}  ({summary['n_test']} rows, {summary['models']} fold models, "
          f"{summary['images_per_second']:.1f} test images/s over all experiments); weights and CVs in "
          f"{Path(summary['submission']).with_suffix('.json')}")


def cmd_validate(args) -> None:
    from lresizervit.inference.submission import validate_file

    cfg = _config(args)
    test_csv = args.test_csv or Path(cfg.data.dir) / "test.csv"
    n = validate_file(args.file, test_csv, cfg.task)
    print(f"{args.file}: valid ({n} rows)")


def cmd_bench(args) -> None:
    from lresizervit.bench.command import check_args, run_bench

    check_args(args)  # a bad flag is named before the config is read, let alone anything measured
    result, table = run_bench(_config(args), args)
    _emit(args, result, table)


def _emit(args, result: dict, table: str) -> None:
    """Print a benchmark's table; also write it (--md) and the raw figures (--json), atomically."""
    from lresizervit.io_utils import atomic_write_json, atomic_write_text

    if args.json:
        atomic_write_json(args.json, result)
    if args.md:
        atomic_write_text(args.md, table + "\n")
    print(table)


def cmd_ablation(args) -> None:
    from lresizervit.ablation import format_ablation, run_ablation

    args.config = args.config or "configs/ablation.yaml"
    cfg = _config(args)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    result = run_ablation(args.config, cfg, tuple(args.set or ()), modes=modes,
                          n_train=args.train, seed=args.seed)
    _emit(args, result, format_ablation(result))


def cmd_transfer(args) -> None:
    from lresizervit.transfer import format_transfer, run_transfer

    args.config = args.config or "configs/transfer.yaml"
    cfg = _config(args)
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    result = run_transfer(args.config, cfg, tuple(args.set or ()), arms=arms, n_train=args.train, seed=args.seed,
                          pretrain_train=args.pretrain_train, pretrain_seed=args.pretrain_seed,
                          pretrain_epochs=args.pretrain_epochs)
    _emit(args, result, format_transfer(result))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lresizervit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("config", nargs="?", help=f"experiment YAML (default: {DEFAULT_CONFIG})")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
        return sp

    sp = sub.add_parser("synth", help="generate a synthetic Kaggle-shaped data set")
    sp.add_argument("--out", required=True)
    sp.add_argument("--train", type=int, default=1200)
    sp.add_argument("--test", type=int, default=200)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--detail-period", type=float, default=None,
                    help="stripe period as a fraction of the photo's shorter side (default 0.03125: 3 px at 96 px)")
    sp.add_argument("--min-side", type=int, default=None, help="smallest shorter side in px (default 256)")
    sp.add_argument("--max-side", type=int, default=None, help="largest shorter side in px (default 768)")
    sp.add_argument("--max-long-side", type=int, default=None, help="largest longer side in px (default 1024)")
    sp.add_argument("--noise-std", type=float, default=None, help="label noise in Pawpularity points (default 6)")
    sp.add_argument("--workers", type=int, default=None)
    sp.add_argument("--force", action="store_true", help="regenerate even if --out holds a data set")
    sp.add_argument("--config", default=None, help="write the data set in this config's task layout "
                    "(columns, image paths, target range; default: Pawpularity's)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    sp.set_defaults(func=cmd_synth)

    sp = with_config(sub.add_parser("folds", help="write the stratified folds file"))
    sp.add_argument("--if-missing", action="store_true", help="keep an existing folds file")
    sp.set_defaults(func=cmd_folds)
    sp = with_config(sub.add_parser("tfrecords", help="write pre-resized TFRecord shards (TPU input, faster loading)"))
    sp.add_argument("--split", choices=("train", "test", "both"), default="both")
    sp.add_argument("--shards", type=int, default=None, help="shard count (default: ~100-200 MB each)")
    sp.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored images")
    sp.add_argument("--workers", type=int, default=None, help="encoding processes (at most 2)")
    sp.add_argument("--if-missing", action="store_true", help="keep records that match the folds file and size")
    sp.set_defaults(func=cmd_tfrecords)
    with_config(sub.add_parser("list-folds", help="print the fold numbers of the folds file")).set_defaults(
        func=cmd_list_folds)
    sp = with_config(sub.add_parser("check-data", help="validate train.csv and test.csv, decode every image "
                                    "(results cached beside the folds file) and report duplicate photos"))
    sp.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    sp.set_defaults(func=cmd_check_data)

    wp = sub.add_parser("weights", help="pretrained backbone weights: fetch a keras-hub preset into a folder, or "
                        "check that a config's backbone can be found")
    wsub = wp.add_subparsers(dest="weights_command", required=True)
    sp = wsub.add_parser("fetch", help="download a keras-hub preset (needs the internet) into --out")
    sp.add_argument("preset", help="a keras-hub preset name (e.g. swin_base_patch4_window7_224), a kaggle:// "
                    "handle or a preset folder")
    sp.add_argument("--out", required=True, help="the folder to write (a Kaggle dataset, or model.backbone.name)")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    sp.set_defaults(func=cmd_weights)
    sp = wsub.add_parser("blank", help="write a preset folder with a known preset's architecture and RANDOM "
                         "weights, for timing the train step offline (never for training)")
    # Not imported here to list the names: that module loads Keras, and building the parser must stay instant
    # (kaggle download/submit fail fast without a network). An unknown name's error lists them.
    sp.add_argument("preset", help="a known preset name, e.g. swin_base_patch4_window7_224 (README: weights blank)")
    sp.add_argument("--out", required=True, help="the folder to write")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    sp.set_defaults(func=cmd_weights)
    with_config(wsub.add_parser("check", help="say where the config's backbone weights come from, or fail "
                                "with what to attach")).set_defaults(func=cmd_weights)

    sp = with_config(sub.add_parser("train", help="train one fold"))
    sp.add_argument("--fold", type=int, required=True)
    sp.add_argument("--force", action="store_true", help="retrain a fold that is already complete")
    sp.set_defaults(func=cmd_train)
    sp = with_config(sub.add_parser("cv", help="collect the folds' OOF into cv.json and print the table"))
    sp.add_argument("--if-complete", action="store_true", help="exit 0 when some folds are still missing")
    sp.set_defaults(func=cmd_cv)

    sp = with_config(sub.add_parser("report", help="figures + report.md of a trained experiment"))
    sp.add_argument("--if-complete", action="store_true", help="exit 0 when cv.json is not written yet")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("predict", help="predict test.csv with all folds (of one or several experiments, "
                        "blended with OOF-fitted weights) and write the submission")
    sp.add_argument("experiments", nargs="*", metavar="EXP",
                    help=f"config YAML or experiment folder, one or more (default: {DEFAULT_CONFIG})")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (every EXP)")
    sp.add_argument("--out", default=None,
                    help="submission path (default: <predict.out_dir>/<name>[+<name>...][+svr].csv)")
    sp.add_argument("--data-dir", default=None, help="where test.csv, test/ (and train/ for the SVR or another "
                    "TTA) are (default: the first EXP's data.dir)")
    sp.add_argument("--tta", default=None, help="override predict.tta for every EXP: none, hflip, flip_zoom")
    sp.add_argument("--svr", action=argparse.BooleanOptionalAction, default=None,
                    help="add (or not) each experiment's SVR head on its embeddings (predict.svr)")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("validate", help="check a submission file against test.csv")
    sp.add_argument("file")
    sp.add_argument("--config", default=None, help=f"whose task and data.dir to check against (default: "
                    f"{DEFAULT_CONFIG})")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    sp.add_argument("--test-csv", default=None, help="default: <data.dir>/test.csv of the config")
    sp.set_defaults(func=cmd_validate)

    sp = with_config(sub.add_parser("bench", help="loader images/s, train-step time/memory/FLOP/s, predict images/s"))
    sp.add_argument("--what", choices=("loader", "step", "efficiency", "predict", "replicas"), default="loader")
    sp.add_argument("--variants", default=None,
                    help="step/efficiency: MODE[@SIZE],... e.g. learned@512,none@512 (default: learned, bilinear, "
                         "none at data.image_size, learned at 768 and 1024, bilinear at 1024; efficiency: learned)")
    sp.add_argument("--precisions", default=None, help="step/efficiency: comma-separated train.precision values "
                    "(default: the config's; efficiency: float32,mixed_bfloat16)")
    sp.add_argument("--backends", default=None, help="step/efficiency: comma-separated Keras backends to "
                    "measure side by side, each variant in its own process, e.g. tensorflow,jax (default: the "
                    "one Keras starts with)")
    sp.add_argument("--rounds", type=int, default=1, help="step/efficiency: run every variant this many times, "
                    "interleaved (median over all)")
    sp.add_argument("--matmul-size", type=int, default=None, help="step/efficiency: n of the n x n x n reference "
                    "matmul (default: 2048 on CPU, 8192 on GPU)")
    sp.add_argument("--batch", type=int, default=4, help="step/replicas: (global) batch size")
    sp.add_argument("--steps", type=int, default=3, help="step: timed steps per variant; replicas: steps per pass")
    sp.add_argument("--images", type=int, default=256, help="loader: images to read per pass")
    sp.add_argument("--repeats", type=int, default=3, help="loader/predict: passes per pipeline (median reported)")
    sp.add_argument("--test-images", default=None, metavar="N,N,...",
                    help="predict: instead, peak memory and s per 1,000 photos of the whole predict command on "
                         "the first N test photos, each N in its own process (e.g. 1000,10000)")
    sp.add_argument("--json", default=None, help="also write the raw figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("ablation", help="train each resizer mode on a resolution benchmark, one table")
    sp.add_argument("config", nargs="?", help="experiment YAML (default: configs/ablation.yaml)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (every mode)")
    sp.add_argument("--modes", default="learned,conv_after_resize,bilinear",
                    help="comma-separated model.resizer.mode values (none is costly: ~13x a learned epoch)")
    sp.add_argument("--train", type=int, default=1500, help="synthetic train images")
    sp.add_argument("--seed", type=int, default=1, help="seed of the synthetic data set")
    sp.add_argument("--json", default=None, help="also write the figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_ablation)

    sp = sub.add_parser("transfer", help="pretrain a small keras-hub ViT on a large synthetic set, fine-tune it "
                        "(learned and bilinear resizer) next to the same ViT from scratch, one table")
    sp.add_argument("config", nargs="?", help="the fine-tuning experiment YAML (default: configs/transfer.yaml)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key (pretraining and every arm, before the arm's own keys)")
    sp.add_argument("--arms", default="pretrained_learned,pretrained_bilinear,scratch_learned,scratch_bilinear",
                    help="comma-separated arms: {pretrained,scratch}_{learned,bilinear}")
    sp.add_argument("--train", type=int, default=400, help="synthetic photos to fine-tune on")
    sp.add_argument("--seed", type=int, default=3, help="seed of the fine-tuning set")
    sp.add_argument("--pretrain-train", type=int, default=3000, help="synthetic photos to pretrain on")
    sp.add_argument("--pretrain-seed", type=int, default=2, help="seed of the pretraining set (not --seed)")
    sp.add_argument("--pretrain-epochs", type=int, default=15, help="epochs of pretraining")
    sp.add_argument("--json", default=None, help="also write the figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_transfer)

    # stdlib-only at import
    from lresizervit.kaggle_io.commands import add_subparsers as add_kaggle_subparsers

    add_kaggle_subparsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from lresizervit.config import ConfigError
    from lresizervit.data.schema import SchemaError

    args = build_parser().parse_args(argv)
    expected = (ConfigError, SchemaError, FileNotFoundError, FileExistsError, ValueError)
    try:
        args.func(args)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk or a read-only folder: the file it names is the artefact (io_utils names it, not its
        # temp file); everything written before it is whole, so the same command is the fix.
        where = f"{exc.filename}: " if exc.filename else ""
        hint = ("; free some space and run the same command again (files written before are whole, and a fold "
                "resumes from its last completed epoch)") if exc.errno == errno.ENOSPC else ""
        print(f"error: {where}{exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    except Exception as exc:
        # An unreadable image surfaces inside tf.data as a TF error wrapping our ImageDecodeError:
        # report its one line (it names the file), not TF's traceback.
        line = next((ln.strip() for ln in str(exc).splitlines() if "cannot decode image" in ln), None)
        if line is None:
            raise
        print(f"error: {line.split('ImageDecodeError: ')[-1]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
