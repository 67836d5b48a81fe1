"""Training commands: `train` (one fold), `cv` (the folds' OOF into cv.json), `report`."""

from __future__ import annotations

from lresizervit.commands.common import config, with_config


def cmd_train(args) -> int | None:
    from lresizervit.backend import check_request, check_support, planned, select
    from lresizervit.run import BACKUP_DIR
    from lresizervit.training.backup import backup_epoch
    from lresizervit.training.deadline import EXIT_TEMPFAIL, Deadline, TimeBudgetExceeded
    from lresizervit.training.preflight import check_inputs, plan_fold, skip_complete

    cfg = config(args)
    deadline = Deadline.from_env()  # LRESIZERVIT_DEADLINE: a Kaggle session's time budget
    check_request(cfg.train.backend)  # a backend KERAS_BACKEND contradicts: refused before anything else
    check_support(cfg, planned(cfg.train.backend))  # what only TensorFlow runs, refused before Keras starts
    # The folds file, the experiment's config, a complete fold, the images or records: all read before Keras
    # starts, so a skip or a refusal takes a second, not the ~8 s of importing TensorFlow.
    plan = plan_fold(cfg, args.fold, args.force)
    try:
        # A multi-worker worker skips or resumes only together with the others: that is the trainer's.
        if plan.complete and plan.worker is None:
            skip_complete(plan)
            return None
        if deadline is not None and not plan.complete:  # checked again by the trainer; here, at no Keras start
            from lresizervit.models.tta import tta_views

            done = 0 if args.force else backup_epoch(plan.out / BACKUP_DIR)
            deadline.check_start(cfg.run_dir, args.fold, cfg.train.epochs, len(tta_views(cfg.predict.tta)), done)
        if plan.worker is None:
            plan = check_inputs(plan)
        select(cfg.train.backend)  # before anything imports Keras: it picks its backend once
        from lresizervit.training.trainer import train_fold

        train_fold(cfg, args.fold, force=args.force, deadline=deadline, plan=plan)
    except TimeBudgetExceeded as exc:
        # Not an error: the fold is resumable, and train_folds.sh goes on (exit 75 = EX_TEMPFAIL).
        print(exc, flush=True)
        return EXIT_TEMPFAIL
    return None


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
    from lresizervit.data.folds import read_folds
    from lresizervit.inference.predict import format_table
    from lresizervit.run import CONFIG_FILE, fold_is_complete, trained_config, write_cv

    now = config(args)
    if args.if_complete and not (now.run_dir / CONFIG_FILE).is_file():
        # train_folds.sh --parallel runs cv after its folds even when every one of them failed early.
        print(f"{now.run_dir}: no fold trained yet; no cv.json written")
        return
    cfg = trained_config(now)
    if _not_chief(cfg):
        return
    if write_cv(cfg) is None:
        _, n_folds = read_folds(cfg.data.folds_csv, cfg.task)
        missing = [k for k in range(n_folds) if not fold_is_complete(cfg.run_dir, k)]
        message = (f"{cfg.run_dir}: folds {missing} of {n_folds} are not trained yet; no cv.json written "
                   f"(train them: bash train_folds.sh CONFIG {' '.join(map(str, missing))})")
        if args.if_complete:
            print(message)
            return
        raise ValueError(message)
    print(format_table(cfg))


def cmd_report(args) -> None:
    from lresizervit.report import write_report
    from lresizervit.run import CONFIG_FILE, CV_FILE, trained_config

    now = config(args)
    if args.if_complete and not (now.run_dir / CONFIG_FILE).is_file():
        print(f"{now.run_dir}: no fold trained yet; no report written")
        return
    # The images may have moved since training; the model settings may not.
    cfg = trained_config(now)
    if _not_chief(cfg):
        return
    if not (cfg.run_dir / CV_FILE).is_file() and args.if_complete:
        print(f"{cfg.run_dir}: no cv.json yet; no report written")
        return
    print(f"wrote {write_report(cfg)} and its figures")


def register(sub) -> None:
    sp = with_config(sub.add_parser(
        "train", help="train one fold; with LRESIZERVIT_DEADLINE (unix time) set, a fold that would not end "
        "before it stops at an epoch end, unfinished and resumable, and the exit status is 75"))
    sp.add_argument("--fold", type=int, required=True)
    sp.add_argument("--force", action="store_true", help="retrain a fold that is already complete")
    sp.set_defaults(func=cmd_train)
    sp = with_config(sub.add_parser("cv", help="collect the folds' OOF into cv.json and print the table"))
    sp.add_argument("--if-complete", action="store_true", help="exit 0 when some folds are still missing")
    sp.set_defaults(func=cmd_cv)

    sp = with_config(sub.add_parser("report", help="figures + report.md of a trained experiment"))
    sp.add_argument("--if-complete", action="store_true", help="exit 0 when cv.json is not written yet")
    sp.set_defaults(func=cmd_report)
