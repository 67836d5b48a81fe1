"""Prediction commands: `predict` (folds × TTA of one or several experiments, blended) and `validate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lresizervit.commands.common import DEFAULT_CONFIG, config


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


def cmd_predict(args) -> None:
    from lresizervit.backend import select
    from lresizervit.inference.ensemble import default_submission_path, format_members, run_ensemble
    from lresizervit.inference.predict import format_table
    from lresizervit.run import fold_models

    cfgs = _prediction_configs(args)
    for cfg in cfgs:  # every fold's files whole, read before Keras starts: a refusal takes a second, not ~8
        fold_models(cfg.run_dir, cfg.task)
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

    cfg = config(args)
    test_csv = args.test_csv or Path(cfg.data.dir) / "test.csv"
    n = validate_file(args.file, test_csv, cfg.task)
    print(f"{args.file}: valid ({n} rows)")


def register(sub) -> None:
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
