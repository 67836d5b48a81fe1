"""Predict the test set with an ensemble: experiments, and SVR heads on their embeddings, blended with
weights fitted on the out-of-fold predictions (the weights: `blend.py`).

A member is one prediction source: the network of an experiment (its folds × TTA views averaged), or the
SVR head of that experiment (per fold an SVR fitted on the embeddings of the fold's training part only).
Each member has an OOF prediction for every training row and a prediction for the test set, made the same
way: the same TTA views, averaged and clipped the same way. The blend weights (non-negative, summing to 1)
are fitted on the concatenated OOF only; the test set never influences them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.config import Config
from lresizervit.data.schema import check_images, read_table
from lresizervit.inference.blend import (
    blend,
    fit_blend_weights,
    format_members,
    nested_blend_rmse,
    out_of_fold_blend,
)
from lresizervit.inference.svr import SVRHead, fit_svr_head, load_svr_head, save_svr_head
from lresizervit.io_utils import atomic_write_csv, atomic_write_json
from lresizervit.run import (
    CONFIG_FILE,
    METRICS_FILE,
    OOF_FILE,
    FoldFileError,
    fold_models,
    oof_cache_files,
    read_cv,
    read_metrics,
    read_oof,
    retrain_command,
    svr_file,
)
from lresizervit.task import FOLD, Task, rmse

# The blend's names stay importable from here, where they were defined before blend.py split off.
__all__ = ["Member", "blend", "default_submission_path", "experiment_members", "fit_blend_weights",
           "format_members", "nested_blend_rmse", "out_of_fold_blend", "run_ensemble"]


# ------------------------------------------------------------------------------------------------- members

@dataclass
class Member:
    name: str  # "<experiment>" for the network, "<experiment>+svr" for its SVR head
    experiment: str
    kind: str  # "network" or "svr"
    tta: str
    task: Task = field(repr=False)
    oof: pd.DataFrame | None  # <id>, kfold, <target>, pred; None when no OOF exists yet (single member only)
    test: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def cv_rmse(self) -> float | None:
        return None if self.oof is None else rmse(self.oof[self.task.target_column], self.oof["pred"])


def _fold_fingerprint(fold_path: Path, model_path: Path) -> str:
    """Which trained model a cached OOF or SVR belongs to: a retrained fold rewrites its metrics.json."""
    h = hashlib.sha1((fold_path / METRICS_FILE).read_bytes())
    h.update(str(model_path.stat().st_size).encode())
    return h.hexdigest()


def _two_outputs(model):
    """The fold model with its embeddings as a second output: one forward pass feeds the network and the SVR."""
    import keras

    return keras.Model(model.inputs, [model.output, model.get_layer("embeddings").output],
                       name=f"{model.name}_with_embeddings")


def _dataset(cfg: Config, paths: list[str], meta: np.ndarray):
    from lresizervit.data.pipeline import make_dataset

    return make_dataset(paths, meta, None, image_size=cfg.data.image_size, batch_size=cfg.predict.batch_size,
                        training=False)


def _embed(model, ds) -> np.ndarray:
    """Embeddings of the plain view (what the SVR is fitted on); `model` is a two-output model."""
    from lresizervit.backend import predict_batch

    chunks, rows = [], None
    for x in ds:
        rows = rows or int(x["image"].shape[0])  # later batches padded to the first's size on JAX
        chunks.append(np.asarray(predict_batch(model, x, rows)[1], np.float32))
    return np.concatenate(chunks)


def _train_frame(data_dir: Path, oof: pd.DataFrame, task: Task) -> tuple[pd.DataFrame, list[str]]:
    """The OOF rows with their metadata from train.csv and their image paths (for recomputing OOF / SVR)."""
    train_csv = data_dir / "train.csv"
    train = read_table(train_csv, "train", task)
    ID = task.id_column
    missing = sorted(set(oof[ID]) - set(train[ID]))
    if missing:
        raise ValueError(f"{train_csv}: {len(missing)} ids of the experiment's oof.csv are missing, e.g. "
                         f"{missing[0]}: was it trained on another data set? (set --data-dir)")
    frame = oof[[ID, FOLD, task.target_column]].merge(train[[ID, *task.metadata_columns]], on=ID, how="left",
                                                      validate="one_to_one")
    return frame, check_images(frame, data_dir, "train", str(train_csv), task)


def _read_oof(cfg: Config) -> pd.DataFrame | None:
    """The experiment's concatenated OOF (None before `cv` wrote it), whole: every row cv.json counted."""
    path, task = cfg.run_dir / OOF_FILE, cfg.task
    if not path.is_file():
        return None
    cv = read_cv(cfg.run_dir)
    try:
        oof = read_oof(path, task.id_column)
        problem = None
        if list(oof.columns) != [task.id_column, FOLD, task.target_column, "pred"]:
            problem = f"has the columns {list(oof.columns)}"
        elif cv is not None and len(oof) != cv["n_oof"]:
            problem = f"holds {len(oof)} rows where cv.json counts {cv['n_oof']}"
        elif not np.isfinite(pd.to_numeric(oof["pred"], errors="coerce")).all():
            problem = "has rows without a prediction"
    except ValueError as exc:
        problem = str(exc).split(": ", 1)[-1]
    if problem:
        raise ValueError(f"{path}: {problem}: truncated or corrupted; nothing was blended. Rebuild it from "
                         f"the folds: python -m lresizervit cv {cfg.run_dir / CONFIG_FILE}")
    return oof


def _load_fold_model(path: Path, fold: int):
    """Load a fold's model; a file that cannot be read names itself, the fold and how to retrain it."""
    import zipfile
    import zlib

    from lresizervit.models.fold_model import UnreadableArchiveError, load_fold_model

    try:
        return load_fold_model(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # Not the file's fault: a model holding code, a SavedModel backbone's folder that is missing, an
        # archive this Keras cannot read, a fold file that already names itself.
        if "refused" in str(exc) or (isinstance(exc, FileNotFoundError) and exc.filename != str(path)) \
                or isinstance(exc, UnreadableArchiveError | FoldFileError):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        raise FoldFileError(f"{path}: fold {fold}'s model cannot be loaded ({type(exc).__name__}: {first}): "
                            f"truncated or corrupted; nothing was blended. Retrain the fold: "
                            f"{retrain_command(path.parent.parent, fold)}") from None


def experiment_members(cfg: Config, data_dir: Path, test: pd.DataFrame, test_paths: list[str],
                       need_oof: bool) -> tuple[list[Member], dict]:
    """The network member of one experiment (and its SVR member when `predict.svr`), OOF and test.

    The OOF written at training time is reused when it was predicted with the TTA asked for now; otherwise
    (or for the SVR) each fold model predicts its own validation rows again, cached in the run folder.
    """
    from lresizervit.models.tta import predict_models, tta_views

    tta, svr = cfg.predict.tta, cfg.predict.svr
    tta_views(tta)  # an unknown mode fails here, before any model loads
    run = cfg.run_dir
    model_paths = fold_models(run, cfg.task)  # every fold's files whole, before anything is predicted
    prints = [_fold_fingerprint(p.parent, p) for p in model_paths]
    # None for folds trained before metrics.json recorded its TTA: their OOF is re-predicted, since the
    # saved config.yaml says only what the last fold trained used.
    trained_tta = [read_metrics(run, k).get("tta") for k in range(len(model_paths))]
    saved_oof = _read_oof(cfg)
    t_load = time.perf_counter()
    models = [_load_fold_model(p, k) for k, p in enumerate(model_paths)]
    load_seconds = time.perf_counter() - t_load

    nn_oof = svr_oof = None
    heads = _load_heads(run, prints, cfg.predict.svr_c) if svr else None
    if saved_oof is not None and not svr and all(t == tta for t in trained_tta):
        nn_oof = saved_oof
    elif saved_oof is not None:
        cached = _read_cache(cfg, prints)
        if cached is not None and (heads is not None or not svr):
            nn_oof, svr_oof = cached
        else:  # a missing, stale or unreadable cache or head: predict the OOF (and fit the heads) again
            nn_oof, svr_oof, fitted = _recompute_oof(cfg, data_dir, saved_oof, models, prints, model_paths)
            heads = fitted if svr else None
    elif need_oof or svr:
        raise FileNotFoundError(f"{run / OOF_FILE}: missing; run `python -m lresizervit cv CONFIG` "
                                "(every fold must be trained) before blending or fitting the SVR head")
    if svr and heads is None:
        raise FileNotFoundError(f"{svr_file(run, 0, cfg.predict.svr_c)}: missing, and without "
                                f"{run / OOF_FILE} the SVR heads cannot be fitted")

    t0 = time.perf_counter()
    ds = _dataset(cfg, test_paths, test[cfg.task.metadata_columns].to_numpy("float32"))
    if svr:
        nn_test, svr_test = predict_models([_two_outputs(m) for m in models], ds, tta, cfg.task, heads)
    else:
        nn_test, svr_test = predict_models(models, ds, tta, cfg.task), None
    seconds = time.perf_counter() - t0
    views = len(tta_views(tta))
    name = run.name
    members = [Member(name, name, "network", tta, cfg.task, nn_oof, nn_test)]
    if svr:
        members.append(Member(f"{name}+svr", name, "svr", tta, cfg.task, svr_oof, svr_test))
    timing = {"experiment": name, "models": len(models), "tta_views": views, "seconds": seconds,
              "load_seconds": load_seconds, "images_per_second": len(test) / max(seconds, 1e-9),
              "forward_passes_per_second": len(test) * len(models) * views / max(seconds, 1e-9)}
    return members, timing


def _cache_paths(cfg: Config) -> tuple[Path, Path]:
    return oof_cache_files(cfg.run_dir, cfg.predict.tta, cfg.predict.svr_c if cfg.predict.svr else None)


def _cache_key(cfg: Config, prints: list[str]) -> dict:
    return {"tta": cfg.predict.tta, "svr": cfg.predict.svr, "svr_c": cfg.predict.svr_c, "folds": prints}


def _read_cache(cfg: Config, prints: list[str]):
    """(network OOF, SVR OOF or None) from the cache when its key matches; None when missing, stale or
    unreadable (a cache is only a saving of time, never an error)."""
    csv_path, key_path = _cache_paths(cfg)
    try:
        if json.loads(key_path.read_text()) != _cache_key(cfg, prints):
            return None
        cached = read_oof(csv_path, cfg.task.id_column)
        keys = [cfg.task.id_column, FOLD, cfg.task.target_column]
        svr_oof = cached[keys].assign(pred=cached["svr"]) if cfg.predict.svr else None
        return cached[[*keys, "pred"]], svr_oof
    except (OSError, ValueError, KeyError):
        return None


def _recompute_oof(cfg, data_dir, saved_oof, models, prints, model_paths):
    """Each fold model predicts its validation rows with the asked TTA (+ the SVR head fitted on the other
    folds' rows). Cached per TTA in the run folder, keyed by the fold models' fingerprints."""
    from lresizervit.models.tta import predict_models

    csv_path, key_path = _cache_paths(cfg)
    task = cfg.task
    keys = [task.id_column, FOLD, task.target_column]
    frame, paths = _train_frame(data_dir, saved_oof, task)
    meta = frame[task.metadata_columns].to_numpy("float32")
    out = frame[keys].copy()
    out["pred"] = np.nan
    heads = []
    if cfg.predict.svr:
        out["svr"] = np.nan
    for k, model in enumerate(models):
        val = (frame[FOLD] == k).to_numpy()
        if not val.any():
            raise ValueError(f"{cfg.run_dir / OOF_FILE}: fold {k} has no rows")
        val_paths = [p for p, v in zip(paths, val, strict=True) if v]
        val_ds = _dataset(cfg, val_paths, meta[val])
        if cfg.predict.svr:
            two = _two_outputs(model)
            head = _fit_head(cfg, two, [p for p, v in zip(paths, val, strict=True) if not v], meta[~val],
                             frame.loc[~val, task.target_column].to_numpy(np.float64), k, prints[k])
            out.loc[val, "pred"], out.loc[val, "svr"] = predict_models([two], val_ds, cfg.predict.tta, task,
                                                                       [head])
            heads.append(head)
        else:
            out.loc[val, "pred"] = predict_models([model], val_ds, cfg.predict.tta, task)
    def write():
        # The key goes first and last: a crash between the two writes leaves no key, never an old key
        # naming new rows.
        key_path.unlink(missing_ok=True)
        atomic_write_csv(csv_path, out)
        atomic_write_json(key_path, _cache_key(cfg, prints))

    _best_effort(write, csv_path)
    svr_oof = out[keys].assign(pred=out["svr"]) if cfg.predict.svr else None
    return out[[*keys, "pred"]], svr_oof, (heads or None)


def _best_effort(write, path: Path) -> None:
    """Caches are written where they can be: an attached Kaggle dataset is read-only, and a cache is only
    a saving of time."""
    try:
        write()
    except OSError as exc:
        print(f"note: could not cache {path} ({exc.strerror or exc}); it is recomputed next time", flush=True)


def _fit_head(cfg, two_output_model, paths, meta, target, fold: int, fingerprint: str) -> SVRHead:
    """Fit the SVR head on the embeddings of one fold's training part; saved beside the fold model so an
    offline notebook only needs the test images."""
    emb = _embed(two_output_model, _dataset(cfg, paths, meta))
    head = fit_svr_head(emb, target, cfg.predict.svr_c, {"fingerprint": fingerprint})
    path = svr_file(cfg.run_dir, fold, cfg.predict.svr_c)
    _best_effort(lambda: save_svr_head(head, path), path)
    return head


def _load_heads(run_dir: Path, prints: list[str], svr_c: float) -> list[SVRHead] | None:
    """Every fold's saved SVR head, or None when one is missing, unreadable or was fitted for another model
    or C (the caller then fits them again). Heads are plain arrays: nothing in the file is executed."""
    heads = []
    for k, fp in enumerate(prints):
        try:
            head = load_svr_head(svr_file(run_dir, k, svr_c))
        except (OSError, ValueError, KeyError, EOFError):  # missing, truncated, not ours: refit, never fail
            return None
        if head.info.get("fingerprint") != fp or head.info.get("svr_c") != svr_c:
            return None
        heads.append(head)
    return heads


# ------------------------------------------------------------------------------------------------ ensemble


def default_submission_path(cfgs: list[Config]) -> Path:
    """`<predict.out_dir of the first>/<exp>[+<exp>...][+svr].csv`: a blend's name says what is in it."""
    svr = "+svr" if any(c.predict.svr for c in cfgs) else ""
    return Path(cfgs[0].predict.out_dir) / f"{'+'.join(c.run_dir.name for c in cfgs)}{svr}.csv"


def run_ensemble(cfgs: list[Config], data_dir: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Predict test.csv with every experiment (and SVR heads), blend with OOF-fitted weights, write the
    checked submission and its summary `<out>.json`; returns the summary."""
    from lresizervit.inference.submission import write_submission

    if Path(out_path).suffix.lower() != ".csv":
        # Its summary goes to <out>.json beside it: another suffix could make the two the same file.
        raise ValueError(f"--out {out_path}: a submission file must end in .csv")
    data_dir = Path(data_dir)
    test_csv = data_dir / "test.csv"
    task = cfgs[0].task
    test = read_table(test_csv, "test", task)
    test_paths = check_images(test, data_dir, "test", str(test_csv), task)
    names = [c.run_dir.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"an experiment is named twice in {names}")
    need_oof = len(cfgs) > 1
    members, timings = [], []
    for cfg in cfgs:
        ms, timing = experiment_members(cfg, data_dir, test, test_paths, need_oof=need_oof)
        members += ms
        timings.append(timing)
    if len(members) > 1:
        b = blend(members)
    else:
        only = members[0]
        b = {"weights": np.ones(1), "cv_rmse": only.cv_rmse, "cv_rmse_weights_out_of_fold": None,
             "n_oof": None if only.oof is None else len(only.oof)}
    pred = np.column_stack([m.test for m in members]) @ b["weights"]
    # Checked against test.csv read anew, not against the frame the predictions came in.
    ID, TARGET = task.id_column, task.target_column
    write_submission(test[ID], pred, read_table(test_csv, "test", task)[ID].tolist(), out_path, task)
    seconds = sum(t["seconds"] for t in timings)
    summary = {
        "submission": str(out_path), "n_test": len(test),
        "members": [{"name": m.name, "experiment": m.experiment, "kind": m.kind, "tta": m.tta,
                     "cv_rmse": m.cv_rmse, "weight": float(w)} for m, w in zip(members, b["weights"], strict=True)],
        "blend_cv_rmse": b["cv_rmse"], "blend_cv_rmse_weights_out_of_fold": b["cv_rmse_weights_out_of_fold"],
        "n_oof": b["n_oof"], "experiments": timings, "seconds": seconds,
        "images_per_second": len(test) / max(seconds, 1e-9),
        # Back-compatible keys of the single-experiment summary.
        "models": sum(t["models"] for t in timings), "tta_views": timings[0]["tta_views"],
    }
    labels = data_dir / "test_labels.csv"
    if labels.is_file():
        # Only the synthetic generator writes hidden test labels: score the submission as Kaggle would.
        truth = pd.read_csv(labels, dtype={ID: str}).set_index(ID)[TARGET]
        sub = pd.read_csv(out_path, dtype={ID: str})
        summary["test_rmse"] = rmse(truth.loc[sub[ID]].to_numpy(), sub[TARGET].to_numpy())
    atomic_write_json(Path(out_path).with_suffix(".json"), summary)
    return summary


