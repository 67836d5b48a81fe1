"""Data commands: `synth`, `folds`, `tfrecords`, `list-folds`, `check-data`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lresizervit.commands.common import config, count, with_config


def cmd_synth(args) -> None:
    from lresizervit.data.synth import SynthParams, generate
    from lresizervit.task import PAWPULARITY

    given = {"detail_period": args.detail_period, "min_side": args.min_side, "max_side": args.max_side,
             "max_long_side": args.max_long_side, "noise_std": args.noise_std}
    params = SynthParams(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    # The layout (columns, image paths, target range) of the config's task; Pawpularity's without one.
    task = config(args).task if args.config else PAWPULARITY
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

    cfg = config(args)
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
        print(f"duplicate photos: {count(summary['groups'], 'group')} of {summary['rows']} rows, {verb}")
    if cfg.data.merge_duplicates:
        train, groups = merge_duplicates(train, groups, cfg.task)
    return train, groups, summary


def cmd_tfrecords(args) -> None:
    from lresizervit.data.folds import read_folds
    from lresizervit.data.records.manifest import TFRecordsError, check_matches_frame
    from lresizervit.data.schema import check_images, read_table
    from lresizervit.training.preflight import tfrecords_root

    cfg = config(args)
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
        from lresizervit.data.records.writer import write_tfrecords  # TensorFlow: only to write

        check_images(df, data_dir, split, str(source), cfg.task)
        m = write_tfrecords(df, data_dir, out, cfg.data.image_size, cfg.task, num_shards=args.shards,
                            quality=args.quality, workers=args.workers)
        print(f"wrote {out}: {m['total']} records in {len(m['shards'])} shard(s), "
              f"{sum(s['bytes'] for s in m['shards']) / 2**20:.1f} MiB, folds {m['folds']}")


def cmd_list_folds(args) -> None:
    from lresizervit.data.folds import read_folds

    cfg = config(args)
    _, k = read_folds(cfg.data.folds_csv, cfg.task)
    if args.parallel is not None:
        from lresizervit.training.cluster import check_parallel_folds

        check_parallel_folds(cfg.train.strategy, args.parallel)
    print(" ".join(str(i) for i in range(k)))
    if args.parallel is not None:
        # train_folds.sh --parallel keeps each fold's log in the experiment: it needs the folder, which only
        # the resolved config (output_dir, name, --set) knows.
        print(cfg.run_dir)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of 1 or more, not {text!r}")
    return int(text)


def cmd_check_data(args) -> None:
    from lresizervit.data.duplicates import duplicate_groups, group_summary
    from lresizervit.data.image_check import cache_path, check_dataset

    cfg = config(args)
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
    print(f"duplicate photos: {count(summary['groups'], 'group')} of {summary['rows']} train rows, {handling}; "
          f"{task.target_column} differs by up to {summary['max_spread']:g} inside a group")
    for g in summary["largest_spreads"]:
        pairs = ", ".join(f"{i} ({y:g})" for i, y in zip(g["ids"], g["targets"], strict=True))
        print(f"  spread {g['spread']:g}: {pairs}")


def register(sub) -> None:
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
    sp = with_config(sub.add_parser("list-folds", help="print the fold numbers of the folds file"))
    sp.add_argument("--parallel", type=positive_int, metavar="N", default=None,
                    help="for train_folds.sh --parallel N: refuse a train.strategy that cannot train N folds at "
                         "once on this machine, and print the experiment folder on a second line")
    sp.set_defaults(func=cmd_list_folds)
    sp = with_config(sub.add_parser("check-data", help="validate train.csv and test.csv, decode every image "
                                    "(results cached beside the folds file) and report duplicate photos"))
    sp.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    sp.set_defaults(func=cmd_check_data)
