"""The experiment folder `models/<exp>/`: every path and file name in it, which config it was trained with,
and reading what its folds wrote. No other module spells these names.

    config.yaml              the resolved config that trained it; prediction rebuilds from it
    fold_<k>/model.weights.h5  the best epoch by val RMSE: its weights, and
    fold_<k>/model.json      what rebuilds its layers beside config.yaml (models/fold_model.py); folds
                             written before that format hold one `model.keras` archive instead
    fold_<k>/history.csv     one row per epoch
    fold_<k>/oof.csv         <id>, kfold, <target>, pred   (predicted by the best model)
    fold_<k>/metrics.json    val RMSE, epochs, seconds, images/s; written last = the fold is complete
    fold_<k>/backup/         the last completed epoch (weights, optimizer, epoch) while training
    fold_<k>/logs/           TensorBoard logs
    fold_<k>/svr_c<C>.npz    the fold's SVR head for one C (predict --svr), plain arrays
    oof.csv, cv.json         every fold's OOF concatenated, and the CV; once every fold is complete
    oof_<tag>.csv/.json      OOF re-predicted with another TTA (and SVR), keyed by the folds' fingerprints
    report/                  figures + report.md
    dataset-metadata.json    written by `kaggle package`
    logs/fold_<k>.log        the output of fold k's process under `train_folds.sh --parallel`

An experiment is named on the command line by its config YAML (the folder is `<output_dir>/<name>/`) or by
the folder itself (e.g. an attached Kaggle dataset): `experiment_config` resolves both the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.config import Config, ConfigError, config_from_dict, load_config, save_config
from lresizervit.task import FOLD, rmse

CONFIG_FILE = "config.yaml"
CV_FILE = "cv.json"
OOF_FILE = "oof.csv"
# The fold's model: weights + what rebuilds its layers, readable by every supported Keras (models/fold_model.py).
MODEL_FILE = "model.weights.h5"
MODEL_SPEC_FILE = "model.json"
# The format before: one Keras archive, readable only by a Keras at least as new as the one that wrote it.
LEGACY_MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
# Fold 0 only: its learned resizer on a few validation photos, drawn by `report` (resizer_samples.py).
SAMPLES_FILE = "resizer_samples.npz"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
REPORT_DIR = "report"
DATASET_METADATA = "dataset-metadata.json"

# Keys that may differ between the folds of one experiment without changing what model is trained.
# Where the data lives may differ between machines (folds 0-1 at home, 2-4 on Kaggle); write_cv checks
# that the folds' rows still add up.
# Where the experiment and its data live, and how a fold is computed on the hardware at hand (backend,
# devices, precision: a kernel on Kaggle's TPU trains in bfloat16, one on a T4 in float16, one at home in
# float32; the variables are float32 in all and prediction computes in float32, models/fold_model.py).
_HARMLESS_KEYS = {("train", "verbose"), ("train", "tensorboard"), ("train", "strategy"), ("train", "backend"),
                  ("train", "precision"), ("predict",), ("output_dir",),
                  ("data", "dir"), ("data", "folds_csv"), ("data", "cache"), ("data", "tfrecords_dir")}
# Of those, what a command takes from the config it is given rather than from the one that trained.
_WHERE_KEYS = (("data", "dir"), ("data", "folds_csv"), ("data", "cache"), ("data", "tfrecords_dir"))


# ------------------------------------------------------------------------------------------------ paths

def fold_dir(run_dir: str | os.PathLike, fold: int) -> Path:
    return Path(run_dir) / f"fold_{fold}"


def fold_file(run_dir: str | os.PathLike, fold: int, name: str) -> Path:
    """A file of fold `fold`, e.g. fold_file(run, 0, MODEL_FILE)."""
    return fold_dir(run_dir, fold) / name


def svr_file(run_dir: str | os.PathLike, fold: int, c: float) -> Path:
    """The fold's saved SVR head for one C: heads for several C (and every TTA's OOF cache) can coexist."""
    # .npz of plain arrays (inference/svr.py); heads pickled with joblib before are refitted, never loaded.
    return fold_dir(run_dir, fold) / f"svr_c{c:g}.npz"


def oof_cache_files(run_dir: str | os.PathLike, tta: str, svr_c: float | None) -> tuple[Path, Path]:
    """(csv, key json) of the OOF re-predicted with `tta` (and the SVR head of C `svr_c`)."""
    tag = f"{tta}{f'_svr_c{svr_c:g}' if svr_c is not None else ''}"
    return Path(run_dir) / f"oof_{tag}.csv", Path(run_dir) / f"oof_{tag}.json"


def fold_is_complete(run_dir: str | os.PathLike, fold: int) -> bool:
    return fold_file(run_dir, fold, METRICS_FILE).is_file()


def fold_model_file(run_dir: str | os.PathLike, fold: int) -> Path:
    """The fold's model: its weights file, or the archive of a fold trained before that format."""
    weights = fold_file(run_dir, fold, MODEL_FILE)
    legacy = fold_file(run_dir, fold, LEGACY_MODEL_FILE)
    return legacy if legacy.is_file() and not weights.is_file() else weights


def has_trained_fold(run_dir: str | os.PathLike) -> bool:
    run_dir = Path(run_dir)
    return any(any(run_dir.glob(f"fold_*/{name}")) for name in (METRICS_FILE, MODEL_FILE, LEGACY_MODEL_FILE,
                                                                 BACKUP_DIR))


# ------------------------------------------------------------------------------------------ reading folds

class FoldFileError(ValueError):
    """A fold's file is unreadable, truncated or does not match the experiment; the message names the file,
    the fold and the command that retrains it."""


def retrain_command(run_dir: str | os.PathLike, fold: int) -> str:
    """The command that trains fold `fold` of `run_dir` again from scratch (with the config that trained it)."""
    return f"bash train_folds.sh {Path(run_dir) / CONFIG_FILE} {fold} --force"


def _bad_fold_file(path: Path, fold: int, what: str) -> FoldFileError:
    return FoldFileError(f"{path}: fold {fold}'s {path.name} {what}: truncated or corrupted (an interrupted copy, "
                         f"a full disk?); nothing was blended. Retrain the fold: "
                         f"{retrain_command(path.parent.parent, fold)}")


def read_metrics(run_dir: str | os.PathLike, fold: int) -> dict:
    """The fold's metrics.json, or a FoldFileError naming it, the fold and how to retrain it."""
    path = fold_file(run_dir, fold, METRICS_FILE)
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FoldFileError(f"{path}: missing, so fold {fold} is not trained; train it: "
                            f"{retrain_command(run_dir, fold)}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_fold_file(path, fold, f"is not readable JSON ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("n_folds"), int):
        raise _bad_fold_file(path, fold, "is not a fold's metrics (no n_folds)")
    return metrics


def read_cv(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / CV_FILE
    if not path.is_file():
        return None
    try:
        cv = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        cv, reason = None, f"is not readable JSON ({exc})"
    else:
        reason = "is not a CV summary (no n_folds)"
    if not isinstance(cv, dict) or not isinstance(cv.get("n_folds"), int):
        raise ValueError(f"{path}: {reason}: truncated or corrupted; rebuild it from the folds: "
                         f"python -m lresizervit cv {Path(run_dir) / CONFIG_FILE}")
    return cv


def read_oof(path: str | os.PathLike, id_column: str) -> pd.DataFrame:
    """An OOF file with its ids kept as text (an id like '0012' must not become 12); an unreadable one is a
    ValueError naming it."""
    try:
        return pd.read_csv(path, dtype={id_column: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({str(exc).strip()})") from None


def read_fold_oof(run_dir: str | os.PathLike, fold: int, task) -> pd.DataFrame:
    """Fold `fold`'s oof.csv, checked against its metrics.json: all of it, and only this fold's rows."""
    path = fold_file(run_dir, fold, OOF_FILE)
    if not path.is_file():
        raise FoldFileError(f"{path}: missing, so fold {fold} is incomplete; retrain it: "
                            f"{retrain_command(run_dir, fold)}")
    try:
        oof = read_oof(path, task.id_column)
    except ValueError as exc:
        raise _bad_fold_file(path, fold, f"is unreadable ({str(exc).split(': ', 1)[-1]})") from None
    columns = [task.id_column, FOLD, task.target_column, "pred"]
    if list(oof.columns) != columns:
        raise _bad_fold_file(path, fold, f"has the columns {list(oof.columns)}, not {columns}")
    n_val = read_metrics(run_dir, fold).get("n_val")
    pred = pd.to_numeric(oof["pred"], errors="coerce")
    if (n_val is not None and len(oof) != n_val) or not (oof[FOLD] == fold).all() or not np.isfinite(pred).all():
        raise _bad_fold_file(path, fold, f"holds {len(oof)} rows" + (f" where its metrics.json counts {n_val}"
                             if n_val is not None else "") + ", or rows of another fold or without a prediction")
    return oof


def check_model_file(path: str | os.PathLike, fold: int) -> None:
    """A fold's model must be whole: the weights file as big as its model.json records (or a zip archive
    with a config, for a fold of the format before); a truncated one fails here, naming the fold, rather
    than half-way through loading every fold. Reads no Keras: the loader checks the rest."""
    import zipfile

    path = Path(path)
    if path.name == LEGACY_MODEL_FILE:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise _bad_fold_file(path, fold, f"is not a readable Keras archive ({exc})") from None
        if "config.json" not in names:
            raise _bad_fold_file(path, fold, "is a zip archive without a model config")
        return
    spec_path = path.parent / MODEL_SPEC_FILE
    try:
        recorded = json.loads(spec_path.read_bytes().decode("utf-8")).get("weights_bytes")
    except FileNotFoundError:
        raise FoldFileError(f"{spec_path}: missing, so fold {fold}'s {MODEL_FILE} cannot be rebuilt; retrain "
                            f"the fold: {retrain_command(path.parent.parent, fold)}") from None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise _bad_fold_file(spec_path, fold, f"is not readable JSON ({exc})") from None
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
        size = path.stat().st_size
    except OSError as exc:
        raise _bad_fold_file(path, fold, f"is not readable ({exc})") from None
    if magic != b"\x89HDF\r\n\x1a\n":
        raise _bad_fold_file(path, fold, "is not an HDF5 weights file")
    if size != recorded:
        raise _bad_fold_file(path, fold, f"holds {size} bytes where {spec_path.name} records {recorded}")


def fold_models(run_dir: str | os.PathLike, task=None) -> list[Path]:
    """The model of every fold, or an error naming the folds that are missing or unfinished, or the file
    of a fold that is unreadable (with `task`, the folds' oof.csv files are checked too: prediction does not
    read them, but a damaged one means a damaged fold)."""
    run_dir = Path(run_dir)
    cv = read_cv(run_dir)
    metrics = sorted(run_dir.glob(f"fold_*/{METRICS_FILE}"))
    if cv is not None:
        n_folds = cv["n_folds"]
    elif metrics:
        n_folds = read_metrics(run_dir, int(metrics[0].parent.name.split("_")[1]))["n_folds"]
    else:
        raise FileNotFoundError(f"{run_dir}: no trained fold (run bash train_folds.sh with its config)")
    missing = [k for k in range(n_folds) if not fold_is_complete(run_dir, k)
               or not fold_model_file(run_dir, k).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir}: folds {missing} of {n_folds} are not trained; a submission from some folds only "
            f"would silently differ from the CV. Train them: bash train_folds.sh CONFIG {' '.join(map(str, missing))}"
        )
    for k in range(n_folds):
        if read_metrics(run_dir, k)["n_folds"] != n_folds:
            raise _bad_fold_file(fold_file(run_dir, k, METRICS_FILE), k, f"does not say {n_folds} folds")
        check_model_file(fold_model_file(run_dir, k), k)
        if task is not None and fold_file(run_dir, k, OOF_FILE).is_file():
            read_fold_oof(run_dir, k, task)
    return [fold_model_file(run_dir, k) for k in range(n_folds)]


# ------------------------------------------------------------------------------------ which config trained it

def _comparable(tree: dict) -> dict:
    tree = json.loads(json.dumps(tree))
    for path in _HARMLESS_KEYS:
        node = tree
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return tree


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} (saved) != {vb!r} (now)")
    return out


def check_run_config(cfg: Config) -> None:
    """Refuse a config that differs from the one the experiment's trained folds used.

    Mixing folds trained under different configs would give a CV that describes no model.
    """
    import yaml

    path = cfg.run_dir / CONFIG_FILE
    if path.exists() and has_trained_fold(cfg.run_dir):
        saved = yaml.safe_load(path.read_text()) or {}
        try:
            # Through the schema, so a key added to it since (with a default that keeps the old behaviour,
            # e.g. train.ema: false, or the task section meaning Pawpularity) is no difference.
            saved = config_from_dict(saved, str(path)).to_dict()
        except ConfigError:
            pass  # a key since removed: compared as written, and reported as a difference
        diffs = _diff(_comparable(saved), _comparable(cfg.to_dict()))
        if diffs:
            raise ValueError(
                f"{path} was written by a different config; folds of one experiment must share it. "
                f"Use another `name:` or delete {cfg.run_dir}. Differences: " + "; ".join(diffs)
            )


def ensure_run_config(cfg: Config) -> None:
    """Check the config against the trained folds, then save it (a config with no trained fold behind it
    is simply replaced)."""
    check_run_config(cfg)
    save_config(cfg, cfg.run_dir / CONFIG_FILE)


def save_run_config(cfg: Config) -> None:
    """Rewrite the experiment's config (e.g. `kaggle package` recording how the notebook predicts)."""
    save_config(cfg, cfg.run_dir / CONFIG_FILE)


def load_run_config(run_dir: str | os.PathLike, overrides: tuple[str, ...] = ()) -> Config:
    """The config that trained `run_dir` (never today's defaults), with optional --set overrides."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained experiment here (train it with bash train_folds.sh)")
    return load_config(path, overrides)


def experiment_config(spec: str | os.PathLike, overrides: tuple[str, ...] = ()) -> Config:
    """The config of the experiment named by `spec`, as prediction and packaging use it.

    A folder (holding config.yaml, e.g. an attached Kaggle dataset) is the experiment wherever it lies now:
    its saved config, with `output_dir`/`name` pointing at the folder. A config YAML names the experiment
    `<output_dir>/<name>/`: its saved config, with where the data lives and how to predict taken from the
    YAML (and `overrides`), since only those may change after training.
    """
    path = Path(spec)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not an experiment folder (no {CONFIG_FILE}); train it first")
        cfg = load_run_config(path, overrides)
        cfg.output_dir, cfg.name = str(path.parent), path.name
        return cfg
    if path.is_file():
        return trained_config(load_config(path, overrides))
    raise FileNotFoundError(f"{spec}: neither a config file nor an experiment folder")


def trained_config(now: Config) -> Config:
    """The config that trained `now.run_dir`, with where the data and the experiment live and how to predict
    from `now`."""
    if not (now.run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{now.run_dir}: no trained experiment for this config "
                                f"(train it first: bash train_folds.sh CONFIG)")
    cfg = load_run_config(now.run_dir)
    for section, key in _WHERE_KEYS:  # a fold trained on Kaggle saved /kaggle/input/... paths
        setattr(getattr(cfg, section), key, getattr(getattr(now, section), key))
    cfg.predict, cfg.output_dir = now.predict, now.output_dir
    return cfg


# -------------------------------------------------------------------------------------------------- the CV

def write_cv(cfg: Config) -> dict | None:
    """Concatenate the folds' OOF and write cv.json + oof.csv, only once every fold is complete."""
    from lresizervit.data.folds import read_folds
    from lresizervit.io_utils import atomic_write_csv, atomic_write_json

    task = cfg.task
    folds_df, n_folds = read_folds(cfg.data.folds_csv, task)
    run = cfg.run_dir
    if any(not fold_is_complete(run, k) for k in range(n_folds)):
        return None
    parts = [read_fold_oof(run, k, task) for k in range(n_folds)]
    ids = task.id_column
    for k, part in enumerate(parts):
        if set(part[ids]) != set(folds_df.loc[folds_df[FOLD] == k, ids]):
            raise FoldFileError(f"{fold_file(run, k, OOF_FILE)}: fold {k}'s ids differ from fold {k} of "
                                f"{cfg.data.folds_csv}: were the folds rewritten after training? Restore the "
                                f"folds file or retrain the fold: {retrain_command(run, k)}")
    oof = pd.concat(parts, ignore_index=True)
    if len(oof) != len(folds_df) or set(oof[ids]) != set(folds_df[ids]):
        raise ValueError(
            f"{run}: the folds' oof.csv files cover {len(oof)} rows but {cfg.data.folds_csv} has "
            f"{len(folds_df)}: were the folds rewritten after training? Retrain or restore the folds file."
        )
    target = task.target_column
    fold_rmse = [rmse(g[target], g["pred"]) for _, g in oof.groupby(FOLD, sort=True)]
    # The honest constant baseline: each fold predicts the mean of its own training part.
    const = np.empty(len(folds_df))
    for k in range(n_folds):
        mask = (folds_df[FOLD] == k).to_numpy()
        const[mask] = folds_df.loc[~mask, target].mean()
    cv = {
        "n_folds": n_folds,
        "n_oof": len(oof),
        "cv_rmse": rmse(oof[target], oof["pred"]),
        "fold_rmse": fold_rmse,
        "fold_rmse_mean": float(np.mean(fold_rmse)),
        "fold_rmse_std": float(np.std(fold_rmse)),
        "constant_baseline_rmse": rmse(folds_df[target], const),
    }
    gen = Path(cfg.data.dir) / "generator.json"
    if gen.is_file():
        cv["noise_floor_rmse"] = json.loads(gen.read_text()).get("noise_floor_rmse")
    atomic_write_csv(run / OOF_FILE, oof)
    atomic_write_json(run / CV_FILE, cv)
    return cv
