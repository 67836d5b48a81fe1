"""Train one fold (one process per fold frees accelerator memory between folds) and collect the CV.

Artefacts (the contract in DESIGN.md), all written atomically:
    models/<exp>/config.yaml            the resolved config; prediction rebuilds from it
    models/<exp>/fold_<k>/model.keras   the best epoch by val RMSE
    models/<exp>/fold_<k>/history.csv   one row per epoch
    models/<exp>/fold_<k>/oof.csv       Id, kfold, Pawpularity, pred   (written by the best model)
    models/<exp>/fold_<k>/metrics.json  val RMSE, epochs, seconds, images/s; written last = fold complete
    models/<exp>/oof.csv, cv.json       once every fold of the folds file is complete
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from lresizervit.config import Config, save_config
from lresizervit.data.folds import read_folds
from lresizervit.data.schema import FOLD, ID, META_COLUMNS, TARGET, check_images
from lresizervit.io_utils import atomic_write_csv, atomic_write_json
from lresizervit.models.regressor import build_regressor, load_model, make_loss

MODEL_FILE = "model.keras"
# Keys that may differ between the folds of one experiment without changing what was trained.
_HARMLESS_KEYS = {("train", "verbose"), ("predict",)}


def fold_dir(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / f"fold_{fold}"


def rmse(y_true, y_pred) -> float:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


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


def ensure_run_config(cfg: Config) -> None:
    """Save the resolved config, or check that folds already trained used the same one.

    Mixing folds trained under different configs would give a CV that describes no model.
    """
    import yaml

    path = cfg.run_dir / "config.yaml"
    if path.exists():
        saved = yaml.safe_load(path.read_text()) or {}
        diffs = _diff(_comparable(saved), _comparable(cfg.to_dict()))
        if diffs:
            raise ValueError(
                f"{path} was written by a different config; folds of one experiment must share it. "
                f"Use another `name:` or delete {cfg.run_dir}. Differences: " + "; ".join(diffs)
            )
    save_config(cfg, path)


def load_run_config(run_dir: str | os.PathLike, overrides: tuple[str, ...] = ()) -> Config:
    """The config that trained `run_dir` (never today's defaults), with optional --set overrides."""
    from lresizervit.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained experiment here (train it with bash train_folds.sh)")
    return load_config(path, overrides)


class _FoldMonitor(keras.callbacks.Callback):
    """Saves the best model atomically, writes history.csv every epoch and prints a line per epoch."""

    def __init__(self, out_dir: Path, fold: int, n_train: int, verbose: int):
        super().__init__()
        self.out_dir, self.fold, self.n_train, self.verbose = out_dir, fold, n_train, verbose
        self.best = math.inf
        self.best_epoch = -1
        self.rows: list[dict] = []
        self.train_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._t_val = None

    def on_test_begin(self, logs=None):
        # Validation runs inside the epoch; the train throughput must not include it.
        if getattr(self, "_t0", None) is not None and self._t_val is None:
            self._t_val = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        now = time.perf_counter()
        train_s = (self._t_val or now) - self._t0
        self.train_seconds += train_s
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "lr": float(keras.ops.convert_to_numpy(lr)), "train_seconds": train_s,
               "epoch_seconds": now - self._t0}
        self.rows.append(row)
        val = logs.get("val_rmse", math.inf)
        improved = val < self.best
        if improved:
            self.best, self.best_epoch = val, epoch + 1
            tmp = self.out_dir / f".{MODEL_FILE}.tmp.keras"
            self.model.save(tmp)
            os.replace(tmp, self.out_dir / MODEL_FILE)
        atomic_write_csv(self.out_dir / "history.csv", pd.DataFrame(self.rows))
        print(
            f"fold {self.fold} epoch {epoch + 1:3d}  loss {logs.get('loss', float('nan')):.4f}  "
            f"rmse {logs.get('rmse', float('nan')):6.2f}  val_rmse {val:6.2f}{' *' if improved else '  '}  "
            f"{self.n_train / max(train_s, 1e-9):6.1f} img/s  {now - self._t0:5.1f}s",
            flush=True,
        )


def build_datasets(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, image_dir: Path, seed: int):
    from lresizervit.data.pipeline import make_dataset

    def paths(df):
        return [str(image_dir / f"{i}.jpg") for i in df[ID]]

    # AugmentConfig's fields are exactly augment.train_transform's keyword arguments.
    aug = dataclasses.asdict(cfg.augment)
    common = {"image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size, "cache": cfg.data.cache}
    train_ds = make_dataset(
        paths(train_df), train_df[list(META_COLUMNS)].to_numpy("float32"),
        train_df[TARGET].to_numpy("float32"), training=True, augment_kwargs=aug, shuffle_seed=seed, **common,
    )
    val_ds = make_dataset(
        paths(val_df), val_df[list(META_COLUMNS)].to_numpy("float32"),
        val_df[TARGET].to_numpy("float32"), training=False, **common,
    )
    return train_ds, val_ds


def compile_model(cfg: Config, steps_per_epoch: int) -> keras.Model:
    total = max(1, steps_per_epoch * cfg.train.epochs)
    warmup = int(round(total * cfg.train.warmup_fraction))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.train.learning_rate,
        decay_steps=max(1, total - warmup),
        warmup_target=cfg.train.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    # The policy is read by every layer at construction; the saved model records it per layer, so
    # prediction needs no such call.
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    model = build_regressor(cfg.model, cfg.data.image_size)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.train.weight_decay)
    # Decay the matrices only: shrinking norms, biases and embeddings towards 0 is not regularisation.
    optimizer.exclude_from_weight_decay(
        var_names=["bias", "gamma", "beta", "class_token", "position_embedding"]
    )
    model.compile(
        optimizer=optimizer,
        loss=make_loss(cfg.model),
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


def predict_array(model: keras.Model, ds) -> np.ndarray:
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float64).reshape(-1)


def train_fold(cfg: Config, fold: int) -> dict:
    """Train fold `fold` of the folds file and write its artefacts; returns its metrics."""
    folds_df, n_folds = read_folds(cfg.data.folds_csv)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in {cfg.data.folds_csv}, which has folds 0..{n_folds - 1}")
    image_dir = Path(cfg.data.dir) / "train"
    # Every image is checked before the first step: a missing file must not surface in epoch 7.
    check_images(folds_df, image_dir, cfg.data.folds_csv)
    ensure_run_config(cfg)
    out = fold_dir(cfg.run_dir, fold)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # the fold is incomplete until it is rewritten

    seed = cfg.train.seed + fold
    keras.utils.set_random_seed(seed)
    train_df = folds_df[folds_df[FOLD] != fold].reset_index(drop=True)
    val_df = folds_df[folds_df[FOLD] == fold].reset_index(drop=True)
    train_ds, val_ds = build_datasets(cfg, train_df, val_df, image_dir, seed)
    steps = math.ceil(len(train_df) / cfg.train.batch_size)
    model = compile_model(cfg, steps)
    print(f"fold {fold}/{n_folds - 1}: {len(train_df)} train, {len(val_df)} val images, "
          f"{model.count_params():,} parameters, {cfg.train.epochs} epochs", flush=True)

    monitor = _FoldMonitor(out, fold, len(train_df), cfg.train.verbose)
    t0 = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.train.epochs, callbacks=[monitor], shuffle=False,
              verbose=cfg.train.verbose)
    seconds = time.perf_counter() - t0

    best = load_model(out / MODEL_FILE)
    pred = predict_array(best, val_ds)
    oof = val_df[[ID, FOLD, TARGET]].copy()
    oof["pred"] = pred
    atomic_write_csv(out / "oof.csv", oof)
    metrics = {
        "fold": fold,
        "n_folds": n_folds,
        "val_rmse": rmse(oof[TARGET], oof["pred"]),
        "best_epoch": monitor.best_epoch,
        "epochs": cfg.train.epochs,
        "n_train": len(train_df),
        "n_val": len(val_df),
        "seconds": seconds,
        "train_images_per_second": len(train_df) * cfg.train.epochs / max(monitor.train_seconds, 1e-9),
        "parameters": int(model.count_params()),
    }
    atomic_write_json(out / "metrics.json", metrics)
    print(f"fold {fold}: val RMSE {metrics['val_rmse']:.3f} (best epoch {monitor.best_epoch}), "
          f"{seconds:.0f}s", flush=True)
    write_cv(cfg)
    return metrics


def write_cv(cfg: Config) -> dict | None:
    """Concatenate the folds' OOF and write cv.json + oof.csv, only once every fold is complete."""
    folds_df, n_folds = read_folds(cfg.data.folds_csv)
    run = cfg.run_dir
    missing = [k for k in range(n_folds) if not (fold_dir(run, k) / "metrics.json").is_file()]
    if missing:
        return None
    oof = pd.concat([pd.read_csv(fold_dir(run, k) / "oof.csv", dtype={ID: str}) for k in range(n_folds)],
                    ignore_index=True)
    if len(oof) != len(folds_df) or set(oof[ID]) != set(folds_df[ID]):
        raise ValueError(
            f"{run}: the folds' oof.csv files cover {len(oof)} rows but {cfg.data.folds_csv} has "
            f"{len(folds_df)}: were the folds rewritten after training? Retrain or restore the folds file."
        )
    fold_rmse = [rmse(g[TARGET], g["pred"]) for _, g in oof.groupby(FOLD, sort=True)]
    # The honest constant baseline: each fold predicts the mean of its own training part.
    const = np.empty(len(folds_df))
    for k in range(n_folds):
        mask = (folds_df[FOLD] == k).to_numpy()
        const[mask] = folds_df.loc[~mask, TARGET].mean()
    cv = {
        "n_folds": n_folds,
        "n_oof": len(oof),
        "cv_rmse": rmse(oof[TARGET], oof["pred"]),
        "fold_rmse": fold_rmse,
        "fold_rmse_mean": float(np.mean(fold_rmse)),
        "fold_rmse_std": float(np.std(fold_rmse)),
        "constant_baseline_rmse": rmse(folds_df[TARGET], const),
    }
    gen = Path(cfg.data.dir) / "generator.json"
    if gen.is_file():
        cv["noise_floor_rmse"] = json.loads(gen.read_text()).get("noise_floor_rmse")
    atomic_write_csv(run / "oof.csv", oof)
    atomic_write_json(run / "cv.json", cv)
    return cv
