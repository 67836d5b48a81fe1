"""A training kernel's output brought home: its complete folds merged into `models/<exp>/` as if trained
here (refused when the kernel trained under another config or on other folds), and its interrupted folds'
backups gathered for the next session (`kaggle train --resume`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError


def _experiment_out(cfg, out: Path) -> Path:
    exp = out / "models" / cfg.name
    if not (exp / "config.yaml").is_file():
        logs = sorted(str(p) for p in out.glob("*.log"))
        raise KaggleError(f"{out}: the kernel's output holds no models/{cfg.name}/config.yaml, so it trained "
                          f"nothing" + (f"; its log: {logs[0]}" if logs else ""))
    return exp


def check_same_config(cfg, kernel_config: Path) -> None:
    """The kernel's experiment config must be the experiment's (up to where things live and the hardware's
    backend and precision): folds of one experiment share one config, as in a local run."""
    import yaml

    from lresizervit.config import config_from_dict
    from lresizervit.run import CONFIG_FILE, _comparable, _diff, has_trained_fold

    here = cfg.run_dir / CONFIG_FILE
    mine = config_from_dict(yaml.safe_load(here.read_text()), str(here)).to_dict() \
        if here.is_file() and has_trained_fold(cfg.run_dir) else cfg.to_dict()
    theirs = config_from_dict(yaml.safe_load(kernel_config.read_text()) or {}, str(kernel_config)).to_dict()
    diffs = _diff(_comparable(mine), _comparable(theirs))
    if diffs:
        raise KaggleError(f"{kernel_config}: the kernel trained under another config than {cfg.run_dir}'s, so its "
                          f"folds cannot join this experiment (use another `name:`, or push again with this "
                          f"config): " + "; ".join(d.replace("(saved)", "(here)").replace("(now)", "(kernel)")
                                                   for d in diffs))


def _same_folds(cfg, theirs: Path) -> None:
    from lresizervit.data.folds import read_folds
    from lresizervit.task import FOLD

    here = Path(cfg.data.folds_csv)
    if not here.is_file():
        here.parent.mkdir(parents=True, exist_ok=True)
        from lresizervit.io_utils import atomic_write_bytes

        atomic_write_bytes(here, theirs.read_bytes())
        return
    mine, _ = read_folds(here, cfg.task)
    other, _ = read_folds(theirs, cfg.task)
    ids = cfg.task.id_column
    if dict(zip(mine[ids], mine[FOLD], strict=True)) != dict(zip(other[ids], other[FOLD], strict=True)):
        raise KaggleError(f"{theirs}: the kernel split the rows into folds differently from {here}; its folds "
                          f"cannot join this experiment (ship the same folds file: push again)")


def _replace_folder(src: Path, dest: Path) -> None:
    """`dest` becomes a copy of `src`, whole or not at all (copied beside it, then renamed)."""
    tmp = dest.with_name(f".{dest.name}.incoming")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    old = dest.with_name(f".{dest.name}.replaced")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def merge_output(cfg, out: Path) -> dict:
    """Merge the complete folds of one kernel's downloaded /kaggle/working into `cfg.run_dir`; returns
    {"complete": [...], "interrupted": [...]}: the folds merged, and those the kernel stopped to resume."""
    from lresizervit.run import (
        BACKUP_DIR,
        CONFIG_FILE,
        METRICS_FILE,
        check_model_file,
        fold_model_file,
        read_fold_oof,
        read_metrics,
    )

    exp = _experiment_out(cfg, out)
    check_same_config(cfg, exp / CONFIG_FILE)
    folds_file = out / "folds" / Path(cfg.data.folds_csv).name
    if folds_file.is_file():
        _same_folds(cfg, folds_file)
    complete, interrupted = [], []
    for fold in sorted(exp.glob("fold_*"), key=lambda p: int(p.name.split("_")[1])):
        k = int(fold.name.split("_")[1])
        if (fold / METRICS_FILE).is_file():
            read_metrics(exp, k)  # each names the file and the fold when damaged (a broken download)
            check_model_file(fold_model_file(exp, k), k)
            read_fold_oof(exp, k, cfg.task)
            _replace_folder(fold, cfg.run_dir / fold.name)
            complete.append(k)
        elif (fold / BACKUP_DIR).is_dir():
            interrupted.append(k)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if not (cfg.run_dir / CONFIG_FILE).is_file():
        shutil.copy2(exp / CONFIG_FILE, cfg.run_dir / CONFIG_FILE)
    print(f"{out.name}: merged folds {complete or 'none'} into {cfg.run_dir}"
          + (f"; folds {interrupted} stopped before the time budget and resume with --resume" if interrupted
             else ""), flush=True)
    return {"complete": complete, "interrupted": interrupted}


def gather_checkpoint(cfg, outputs: Path, dest: Path) -> list[int]:
    """The interrupted folds (a backup, no metrics.json) of every downloaded output under `outputs`, not
    complete here, copied into `dest` as the checkpoint dataset a kernel restores; returns their folds."""
    from lresizervit.io_utils import atomic_write_json
    from lresizervit.kaggle_io.kernel import CHECKPOINT_MARKER
    from lresizervit.run import BACKUP_DIR, CONFIG_FILE, METRICS_FILE, fold_is_complete

    if dest.exists():
        shutil.rmtree(dest)
    found = []
    for out in sorted(p for p in outputs.glob("*") if p.is_dir()):
        exp = out / "models" / cfg.name
        for fold in sorted(exp.glob("fold_*")):
            k = int(fold.name.split("_")[1])
            if (fold / BACKUP_DIR).is_dir() and not (fold / METRICS_FILE).is_file() \
                    and not fold_is_complete(cfg.run_dir, k) and k not in found:
                check_same_config(cfg, exp / CONFIG_FILE)
                shutil.copytree(fold, dest / "models" / cfg.name / fold.name)
                shutil.copy2(exp / CONFIG_FILE, dest / "models" / cfg.name / CONFIG_FILE)
                found.append(k)
    if found:
        atomic_write_json(dest / CHECKPOINT_MARKER, {"experiment": cfg.name, "folds": sorted(found)})
    return sorted(found)


def read_run_status(out: Path) -> dict:
    """The kernel's lresizervit-run.json ({} when it wrote none)."""
    from lresizervit.kaggle_io.kernel import RUN_STATUS_FILE

    try:
        return json.loads((out / RUN_STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
