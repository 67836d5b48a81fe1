"""`python -m lresizervit kaggle {download,package,submit,train,infer}`: parsing and printing only."""

from __future__ import annotations

import argparse

from lresizervit.kaggle_io.download import download_competition
from lresizervit.kaggle_io.package import DEFAULT_LICENSE, package_experiment
from lresizervit.kaggle_io.submit import submit

DEFAULT_CONFIG = "configs/default.yaml"


def _config(args):
    """The config whose task names the competition (and whose data.dir holds test.csv): --config, else
    configs/default.yaml where it exists, else the defaults (Pawpularity)."""
    from pathlib import Path

    from lresizervit.config import load_config

    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    return load_config(path, tuple(args.set or ()))


def cmd_download(args) -> None:
    download_competition(args.competition or _config(args).task.competition, args.dest, force=args.force)


def cmd_package(args) -> None:
    given = {"tta": args.tta, "svr": args.svr, "svr_c": args.svr_c}
    info = package_experiment(args.exp, dataset=args.dataset, title=args.title, license_name=args.license,
                              predict_settings={k: v for k, v in given.items() if v is not None},
                              wheel_dirs=tuple(args.wheels or ()))
    run_dir, pred = info["run_dir"], info["predict"]
    print(f"wrote {run_dir / 'dataset-metadata.json'} (id {info['id']}, title {info['title']!r}) and "
          f"{', '.join([info['wheel'].name, *info['extra_wheels']])}; {info['folds']} folds, {info['bytes'] / 2**20:.1f} MiB in all")
    print(f"the notebook will predict with tta={pred.tta}, svr={pred.svr}" + (f" (C={pred.svr_c:g})" if pred.svr
          else "") + f": the predict section of {run_dir / 'config.yaml'} (change it with --tta / --svr)")
    if pred.svr and not info["svr_heads_saved"]:
        print(f"note: no saved SVR heads for C={pred.svr_c:g}: the notebook will fit them from the training "
              f"images; run `python predict.py {run_dir} --svr` here first to ship them")
    print(f"upload:  kaggle datasets create -p {run_dir} --dir-mode zip     "
          f"(a new version: kaggle datasets version -p {run_dir} --dir-mode zip -m MSG)")


def cmd_submit(args) -> None:
    from pathlib import Path

    cfg = _config(args)
    competition = args.competition or cfg.task.competition
    test_csv = args.test_csv or Path(cfg.data.dir) / "test.csv"
    answer = submit(args.file, args.message, competition, test_csv, cfg.task, kernel=args.kernel,
                    kernel_version=args.kernel_version)
    print(f"{args.file} -> {competition}: {answer}")


def _experiment_config(args):
    from lresizervit.config import load_config

    return load_config(args.config, tuple(args.set or ()))


def _cv_and_report(cfg) -> None:
    """What train_folds.sh ends with, once every fold of the experiment is home."""
    from lresizervit.inference.predict import format_table
    from lresizervit.report import write_report
    from lresizervit.run import trained_config, write_cv

    cfg = trained_config(cfg)
    if write_cv(cfg) is None:
        print(f"{cfg.run_dir}: not every fold is trained yet; no cv.json written")
        return
    print(format_table(cfg))
    print(f"wrote {write_report(cfg)} and its figures")


def cmd_train(args) -> None:
    from lresizervit.kaggle_io.client import connect
    from lresizervit.kaggle_io.train import collect, run_train

    cfg = _experiment_config(args)
    if args.collect:
        if args.dry_run or args.resume:
            raise ValueError("kaggle train --collect waits for the kernels pushed last: no --dry-run or --resume")
        done = collect(connect(), cfg, cfg.run_dir / "kaggle", poll_s=args.poll_seconds)
    else:
        result = run_train(cfg, args.accelerator, args.folds, args.kernels, args.time_budget, dry_run=args.dry_run,
                           wait=args.wait, resume=args.resume, wheel_dirs=tuple(args.wheels or ()),
                           poll_s=args.poll_seconds)
        done = result.get("collected")
    if done is not None:
        _cv_and_report(cfg)
        if done["interrupted"]:
            print(f"folds {done['interrupted']} stopped before the time budget: resume them with "
                  f"`python -m lresizervit kaggle train {args.config} --resume --wait`")


def cmd_infer(args) -> None:
    from lresizervit.kaggle_io.infer import run_infer

    run_infer(args.experiments, submit=args.submit, message=args.message, dry_run=args.dry_run,
              wheel_dirs=tuple(args.wheels or ()), poll_s=args.poll_seconds)


def _with_config(sp):
    sp.add_argument("--config", default=None, help=f"whose task names the competition and whose data.dir holds "
                    f"test.csv (default: {DEFAULT_CONFIG} if present, else Pawpularity's)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    return sp


def add_subparsers(sub) -> None:
    """`python -m lresizervit kaggle {download,package,submit,train,infer}`."""
    kp = sub.add_parser("kaggle", help="download the data, package an experiment as a dataset, submit; train and "
                        "predict on Kaggle's GPU / TPU")
    ksub = kp.add_subparsers(dest="kaggle_command", required=True)

    sp = _with_config(ksub.add_parser("download", help="competition files into DEST/<competition>/, unzipped"))
    sp.add_argument("--competition", default=None, help="Kaggle slug (default: the config's task.competition)")
    sp.add_argument("--dest", default="input", help="parent folder (default: input)")
    sp.add_argument("--force", action="store_true", help="download again and replace an existing folder")
    sp.set_defaults(func=cmd_download)

    sp = ksub.add_parser("package", help="write dataset-metadata.json and a wheel into models/<exp>/")
    sp.add_argument("exp", metavar="EXP_DIR_OR_CONFIG", help="models/<exp>/ or the experiment's config YAML")
    sp.add_argument("--dataset", default=None,
                    help="USER/SLUG or SLUG (default: KAGGLE_USERNAME or kaggle.json's username / lresizervit-<exp>)")
    sp.add_argument("--title", default=None, help="dataset title, 6-50 characters (default: LResizerViT <exp>)")
    sp.add_argument("--license", default=DEFAULT_LICENSE, help=f"dataset license name (default {DEFAULT_LICENSE})")
    sp.add_argument("--tta", default=None, help="predict.tta the notebook uses: none, hflip, flip_zoom")
    sp.add_argument("--svr", action=argparse.BooleanOptionalAction, default=None,
                    help="whether the notebook adds the SVR heads (predict.svr)")
    sp.add_argument("--svr-c", type=float, default=None, help="predict.svr_c the notebook uses")
    sp.add_argument("--wheels", action="append", metavar="DIR", help="where to find the keras-hub wheel a keras_hub: "
                    "experiment ships (repeatable; default: the wheel cache, filled by pip download where online)")
    sp.set_defaults(func=cmd_package)

    sp = _with_config(ksub.add_parser("submit", help="check a submission against test.csv, then submit it"))
    sp.add_argument("file")
    sp.add_argument("-m", "--message", required=True)
    sp.add_argument("--competition", default=None, help="Kaggle slug (default: the config's task.competition)")
    sp.add_argument("--test-csv", default=None, help="checked against (default: <data.dir>/test.csv)")
    sp.add_argument("--kernel", default=None, metavar="OWNER/NOTEBOOK",
                    help="code competition: submit this notebook's output file named like FILE")
    sp.add_argument("--kernel-version", type=int, default=None)
    sp.set_defaults(func=cmd_submit)

    sp = ksub.add_parser("train", help="train the experiment's folds in Kaggle kernels (GPU T4 x2 or TPU v5e-8) and "
                         "bring them home")
    sp.add_argument("config", help="the experiment's YAML")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    sp.add_argument("--accelerator", choices=("gpu", "tpu"), default="gpu",
                    help="gpu: T4 x2, two folds at once (default); tpu: v5e-8, Keras on JAX in bfloat16")
    sp.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds (default: every fold "
                    "not trained yet)")
    sp.add_argument("--kernels", type=int, default=1, help="split the folds over this many kernels (sessions "
                    "at once, within Kaggle's limit)")
    sp.add_argument("--time-budget", type=float, default=None, metavar="HOURS",
                    help="each kernel stops cleanly after this long, keeping a backup to --resume (default: the "
                    "session limit, 12 h GPU / 9 h TPU, minus 45 min)")
    sp.add_argument("--dry-run", action="store_true", help="write models/<exp>/kaggle/ (code dataset, kernels) "
                    "and print what would be pushed; no network, no credentials")
    sp.add_argument("--wait", action="store_true", help="wait for the kernels, download their output, merge the "
                    "folds into models/<exp>/, then cv and report")
    sp.add_argument("--collect", action="store_true", help="push nothing: wait for the kernels pushed last and "
                    "bring their folds home (as --wait)")
    sp.add_argument("--resume", action="store_true", help="attach the last session's interrupted folds' backups "
                    "(as a checkpoint dataset) so they resume where they stopped")
    sp.add_argument("--wheels", action="append", metavar="DIR", help="where to find keras-hub's wheel (as kaggle "
                    "package)")
    sp.add_argument("--poll-seconds", type=float, default=60.0, help="how often --wait asks (default 60)")
    sp.set_defaults(func=cmd_train)

    sp = ksub.add_parser("infer", help="the submission made on Kaggle: package and publish the experiments, run "
                         "the internet-off inference kernel on GPU, check its submission.csv, optionally submit")
    sp.add_argument("experiments", nargs="+", metavar="EXP", help="models/<exp> or its config YAML (several: blended)")
    sp.add_argument("--submit", action="store_true", help="submit the kernel's version to the competition")
    sp.add_argument("-m", "--message", default=None, help="the submission's description (with --submit)")
    sp.add_argument("--dry-run", action="store_true", help="package and write the kernel's folder; push nothing")
    sp.add_argument("--wheels", action="append", metavar="DIR", help="as kaggle package")
    sp.add_argument("--poll-seconds", type=float, default=60.0, help="how often to ask while waiting (default 60)")
    sp.set_defaults(func=cmd_infer)
