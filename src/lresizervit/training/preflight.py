"""What training a fold checks before Keras starts, and the skip of a complete fold.

`train` runs these first (commands/training.py), so that a complete fold is skipped and a config, a folds file,
an image or a set of records that cannot train is refused in the second or two it takes to read the files,
not after the ~8 s of importing TensorFlow and Keras: `train_folds.sh` run again after a crash passes over
its complete folds at that speed. `train_fold` runs them itself when it is called without them (tests, the
Python API). Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from lresizervit.config import Config
from lresizervit.data.folds import read_folds
from lresizervit.run import METRICS_FILE, check_run_config, fold_dir, read_metrics, write_cv


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """A fold about to be trained, as read and checked from the files.

    `cfg` is the one to train with: a multi-worker worker's `output_dir` is moved beside the experiment.
    `image_paths` (JPEG input) or `records_dir` (TFRecords) is set once `check_inputs` has checked them."""

    cfg: Config
    fold: int
    n_folds: int
    folds: pd.DataFrame
    out: Path
    complete: bool
    worker: tuple[int, bool] | None
    image_paths: list[str] | None = None
    records_dir: Path | None = None

    @property
    def inputs_checked(self) -> bool:
        return self.image_paths is not None or self.records_dir is not None


def tfrecords_root(cfg: Config) -> Path:
    from lresizervit.data.records.manifest import default_tfrecords_dir

    if cfg.data.tfrecords_dir:
        return Path(cfg.data.tfrecords_dir)
    return default_tfrecords_dir(cfg.data.dir, cfg.data.image_size)


def plan_fold(cfg: Config, fold: int, force: bool = False) -> FoldPlan:
    """Read the folds file and check `fold` is in it and `cfg` is the experiment's (also before skipping:
    "trained" must not be said of a config that was not)."""
    from lresizervit.training.cluster import multi_worker_task

    folds, n_folds = read_folds(cfg.data.folds_csv, cfg.task)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in {cfg.data.folds_csv}, which has folds 0..{n_folds - 1}")
    worker = multi_worker_task(cfg.train.strategy)
    if worker is not None and not worker[1]:
        # Workers train the chief's weights; theirs go beside the experiment, so that a shared file system
        # (NFS, GCS, several workers on one machine) never has two writers of one file.
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir) / f".worker_{worker[0]}"))
    out = fold_dir(cfg.run_dir, fold)
    check_run_config(cfg)
    complete = (out / METRICS_FILE).is_file() and not force
    return FoldPlan(cfg, fold, n_folds, folds, out, complete, worker)


def skip_complete(plan: FoldPlan) -> dict:
    """Say the fold is trained, bring cv.json up to date (the last fold to finish may have been killed before
    writing it) and return the fold's metrics."""
    metrics = read_metrics(plan.cfg.run_dir, plan.fold)  # an unreadable one names itself and the --force command
    print(f"fold {plan.fold}: already trained ({plan.out / METRICS_FILE}); skipped (--force retrains it)",
          flush=True)
    write_cv(plan.cfg)
    return metrics


def check_inputs(plan: FoldPlan) -> FoldPlan:
    """Every image checked before the first step (a missing file must not surface in epoch 7), or the
    records checked against the folds file (records written from another one would validate on rows the
    model trained on)."""
    from lresizervit.data.schema import check_images

    cfg = plan.cfg
    if cfg.data.tfrecords:
        from lresizervit.data.records.manifest import check_matches_frame

        records = tfrecords_root(cfg) / "train"
        check_matches_frame(records, plan.folds, cfg.data.image_size, cfg.task)
        return dataclasses.replace(plan, records_dir=records)
    paths = check_images(plan.folds, cfg.data.dir, "train", cfg.data.folds_csv, cfg.task)
    return dataclasses.replace(plan, image_paths=paths)
