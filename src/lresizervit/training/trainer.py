"""Train one fold (one process per fold frees accelerator memory between folds) and collect the CV.

Artefacts (the contract in DESIGN.md), all written atomically:
    models/<exp>/config.yaml            the resolved config; prediction rebuilds from it
    models/<exp>/fold_<k>/model.keras   the best epoch by val RMSE
    models/<exp>/fold_<k>/history.csv   one row per epoch
    models/<exp>/fold_<k>/oof.csv       Id, kfold, Pawpularity, pred   (written by the best model)
    models/<exp>/fold_<k>/metrics.json  val RMSE, epochs, seconds, images/s; written last = fold complete
    models/<exp>/fold_<k>/backup/       the last completed epoch (weights, optimizer, epoch) while training
    models/<exp>/fold_<k>/logs/         TensorBoard logs
    models/<exp>/oof.csv, cv.json       once every fold of the folds file is complete
    models/.worker_<i>/<exp>/           multi-worker: worker i's identical copy (the chief writes models/<exp>/)

A fold killed mid-training resumes from its last completed epoch when trained again (Keras
BackupAndRestore restores weights, optimizer state and the epoch; history.csv and the best score are
restored from the files). A complete fold (metrics.json exists) is skipped unless `force`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from lresizervit.config import Config, save_config
from lresizervit.data.folds import read_folds
from lresizervit.data.schema import FOLD, ID, META_COLUMNS, TARGET, check_images
from lresizervit.io_utils import atomic_write_csv, atomic_write_json
from lresizervit.models.regressor import build_regressor, load_model, make_loss
from lresizervit.models.tta import predict_models

MODEL_FILE = "model.keras"
BACKUP_DIR = "backup"
# Keys that may differ between the folds of one experiment without changing what model is trained.
# Where the data lives may differ between machines (folds 0-1 at home, 2-4 on Kaggle); write_cv checks
# that the folds' rows still add up.
_HARMLESS_KEYS = {("train", "verbose"), ("train", "tensorboard"), ("train", "strategy"), ("predict",),
                  ("data", "dir"), ("data", "folds_csv"), ("data", "cache"), ("data", "tfrecords_dir")}


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


def _has_trained_fold(run_dir: Path) -> bool:
    return any(run_dir.glob("fold_*/metrics.json")) or any(run_dir.glob("fold_*/" + MODEL_FILE)) \
        or any(run_dir.glob(f"fold_*/{BACKUP_DIR}"))


def check_run_config(cfg: Config) -> None:
    """Refuse a config that differs from the one the experiment's trained folds used.

    Mixing folds trained under different configs would give a CV that describes no model.
    """
    import yaml

    from lresizervit.config import ConfigError, config_from_dict

    path = cfg.run_dir / "config.yaml"
    if path.exists() and _has_trained_fold(cfg.run_dir):
        saved = yaml.safe_load(path.read_text()) or {}
        try:
            # Through the schema, so a key added to it since (with a default that keeps the old behaviour,
            # e.g. train.ema: false) is no difference.
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
    save_config(cfg, cfg.run_dir / "config.yaml")


def load_run_config(run_dir: str | os.PathLike, overrides: tuple[str, ...] = ()) -> Config:
    """The config that trained `run_dir` (never today's defaults), with optional --set overrides."""
    from lresizervit.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained experiment here (train it with bash train_folds.sh)")
    return load_config(path, overrides)


def backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a BackupAndRestore folder (0 when there is none)."""
    meta = Path(backup_dir) / "training_metadata.json"
    if not meta.is_file():
        return 0
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (ValueError, KeyError, TypeError):
        return 0  # unreadable: Keras falls back to its previous copy or starts over


class _FoldMonitor(keras.callbacks.Callback):
    """Saves the best model atomically, writes history.csv every epoch, prints a line per epoch and stops
    the fold after `patience` epochs without improvement. Resumes its state from history.csv.

    With `ema_swap` (the fit's SwapEMAWeights callback) the best model is saved with the EMA weights, the
    ones its val RMSE was measured with.
    """

    def __init__(self, out_dir: Path, fold: int, n_train: int, patience: int = 0, resume_epochs: int = 0,
                 ema_swap: keras.callbacks.SwapEMAWeights | None = None):
        super().__init__()
        self.out_dir, self.fold, self.n_train, self.patience = out_dir, fold, n_train, patience
        self.ema_swap = ema_swap
        self.best = math.inf
        self.best_epoch = -1
        self.rows: list[dict] = []
        history = out_dir / "history.csv"
        if resume_epochs and history.is_file():
            # Rows past the backup's epoch were written by a run killed before its backup: they are redone.
            self.rows = pd.read_csv(history).head(resume_epochs).to_dict("records")
            for row in self.rows:
                if row.get("val_rmse", math.inf) < self.best:
                    self.best, self.best_epoch = row["val_rmse"], int(row["epoch"])
        self.train_seconds = float(sum(r.get("train_seconds", 0.0) for r in self.rows))

    @contextlib.contextmanager
    def _weights_to_save(self):
        if self.ema_swap is None:
            yield
            return
        # Swapped in and back by the same callback, the same way as around validation: the raw weights are
        # in the model again before BackupAndRestore (next in the list) saves the training state.
        self.ema_swap.on_test_begin()
        try:
            yield
        finally:
            self.ema_swap.on_test_end()

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
            with self._weights_to_save():
                self.model.save(tmp)
            os.replace(tmp, self.out_dir / MODEL_FILE)
        atomic_write_csv(self.out_dir / "history.csv", pd.DataFrame(self.rows))
        print(
            f"fold {self.fold} epoch {epoch + 1:3d}  loss {logs.get('loss', float('nan')):.4f}  "
            f"rmse {logs.get('rmse', float('nan')):6.2f}  val_rmse {val:6.2f}{' *' if improved else '  '}  "
            f"{self.n_train / max(train_s, 1e-9):6.1f} img/s  {now - self._t0:5.1f}s",
            flush=True,
        )
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            print(f"fold {self.fold}: no improvement for {self.patience} epochs, stopping early", flush=True)
            self.model.stop_training = True


def tfrecords_root(cfg: Config) -> Path:
    from lresizervit.data.records.manifest import default_tfrecords_dir

    if cfg.data.tfrecords_dir:
        return Path(cfg.data.tfrecords_dir)
    return default_tfrecords_dir(cfg.data.dir, cfg.data.image_size)


def build_tfrecord_datasets(cfg: Config, rec_dir: Path, fold: int, n_folds: int, seed: int, batch_size: int,
                            drop_remainder: bool):
    from lresizervit.data.records.reader import make_tfrecord_dataset

    common = {"image_size": cfg.data.image_size, "batch_size": batch_size, "cache": cfg.data.cache,
              "pure_tf": cfg.data.pure_tf_augment}
    train_ds = make_tfrecord_dataset(rec_dir, folds=[k for k in range(n_folds) if k != fold], training=True,
                                     augment_kwargs=dataclasses.asdict(cfg.augment), shuffle_seed=seed,
                                     drop_remainder=drop_remainder, **common)
    # Fold `fold`'s rows come back in folds-file order, so predictions line up with val_df for oof.csv.
    val_ds = make_tfrecord_dataset(rec_dir, folds=[fold], training=False, **common)
    return train_ds, val_ds


def build_datasets(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, train_paths: list[str],
                   val_paths: list[str], seed: int, batch_size: int):
    import tensorflow as tf

    from lresizervit.data.pipeline import make_dataset

    # AugmentConfig's fields are exactly augment.train_transform's keyword arguments.
    aug = dataclasses.asdict(cfg.augment)
    # One loader thread is the price of bit-reproducible augmentation (threads draw from one RNG).
    calls = 1 if cfg.train.deterministic else tf.data.AUTOTUNE
    common = {"image_size": cfg.data.image_size, "batch_size": batch_size, "cache": cfg.data.cache,
              "num_parallel_calls": calls}
    train_ds = make_dataset(
        train_paths, train_df[list(META_COLUMNS)].to_numpy("float32"),
        train_df[TARGET].to_numpy("float32"), training=True, augment_kwargs=aug, shuffle_seed=seed, **common,
    )
    val_ds = make_dataset(
        val_paths, val_df[list(META_COLUMNS)].to_numpy("float32"),
        val_df[TARGET].to_numpy("float32"), training=False, **common,
    )
    return train_ds, val_ds


def compile_model(cfg: Config, steps_per_epoch: int, replicas: int = 1) -> keras.Model:
    """Build and compile inside the caller's strategy scope. The learning rate scales with the replicas."""
    total = max(1, steps_per_epoch * cfg.train.epochs)
    warmup = int(round(total * cfg.train.warmup_fraction))
    lr = cfg.train.learning_rate * replicas
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(1, total - warmup),
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
    # The policy is read by every layer at construction; the saved model records it per layer, so
    # prediction needs no such call.
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    model = build_regressor(cfg.model, cfg.data.image_size)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=cfg.train.weight_decay,
        global_clipnorm=cfg.train.clip_norm or None,
        # The averages are optimizer variables: BackupAndRestore saves and restores them with the rest.
        use_ema=cfg.train.ema, ema_momentum=cfg.train.ema_momentum,
    )
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


def train_fold(cfg: Config, fold: int, force: bool = False,
               extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Train fold `fold` of the folds file and write its artefacts; returns its metrics.

    A complete fold is skipped (its metrics returned) unless `force`; a fold killed mid-training resumes.
    `extra_callbacks` run after the trainer's own, i.e. after the epoch's backup is written.
    """
    import shutil

    import tensorflow as tf

    from lresizervit.training.strategy import check_workers_agree, describe, make_strategy, multi_worker_task

    folds_df, n_folds = read_folds(cfg.data.folds_csv)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in {cfg.data.folds_csv}, which has folds 0..{n_folds - 1}")
    task = multi_worker_task(cfg.train.strategy)
    if task is not None and not task[1]:
        # Workers train the chief's weights; theirs go beside the experiment, so that a shared file system
        # (NFS, GCS, several workers on one machine) never has two writers of one file.
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir) / f".worker_{task[0]}"))
    out = fold_dir(cfg.run_dir, fold)
    check_run_config(cfg)  # also before skipping: "trained" must not be said of a config that was not
    complete = (out / "metrics.json").is_file() and not force
    strategy = None
    if task is not None:
        # Collective ops are configured when the strategy is made, before TF runs anything else; a worker
        # that skips or resumes alone would leave the others waiting in a collective.
        strategy = make_strategy(cfg.train.strategy)
        resume = 0 if force or complete else backup_epoch(out / BACKUP_DIR)
        check_workers_agree(strategy, fold_complete=int(complete), resume_after_epoch=resume)
    if complete:
        print(f"fold {fold}: already trained ({out / 'metrics.json'}); skipped (--force retrains it)", flush=True)
        write_cv(cfg)
        return json.loads((out / "metrics.json").read_text())
    image_dir = Path(cfg.data.dir) / "train"
    if cfg.data.tfrecords:
        from lresizervit.data.records.manifest import check_matches_frame

        rec_dir = tfrecords_root(cfg) / "train"
        # Records written from another folds file would validate on rows the model trained on.
        check_matches_frame(rec_dir, folds_df, cfg.data.image_size)
    else:
        # Every image is checked before the first step: a missing file must not surface in epoch 7.
        paths = check_images(folds_df, image_dir, cfg.data.folds_csv)

    seed = cfg.train.seed + fold
    keras.utils.set_random_seed(seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or make_strategy(cfg.train.strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.train.batch_size * replicas
    in_val = (folds_df[FOLD] == fold).to_numpy()
    train_df, val_df = folds_df[~in_val].reset_index(drop=True), folds_df[in_val].reset_index(drop=True)
    if cfg.data.tfrecords:
        # A TPU wants every batch the same size.
        tpu = isinstance(strategy, tf.distribute.TPUStrategy)
        train_ds, val_ds = build_tfrecord_datasets(cfg, rec_dir, fold, n_folds, seed, global_batch, tpu)
    else:
        train_paths = [p for p, v in zip(paths, in_val, strict=True) if not v]
        val_paths = [p for p, v in zip(paths, in_val, strict=True) if v]
        train_ds, val_ds = build_datasets(cfg, train_df, val_df, train_paths, val_paths, seed, global_batch)
    steps = math.ceil(len(train_df) / global_batch)
    # Built before the config is saved: a config the model refuses (a size not divisible by the patch, a
    # missing backbone) must not become the experiment's config.
    with strategy.scope():
        model = compile_model(cfg, steps, replicas)
    ensure_run_config(cfg)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # the fold is incomplete until it is rewritten
    backup = out / BACKUP_DIR
    resumed = backup_epoch(backup)
    if not resumed:
        # A fresh start: a model or OOF left by an earlier attempt must not stand in for this one.
        for name in (MODEL_FILE, "oof.csv", "history.csv"):
            (out / name).unlink(missing_ok=True)
    print(f"fold {fold}/{n_folds - 1}: {len(train_df)} train, {len(val_df)} val images, "
          f"{model.count_params():,} parameters, {cfg.train.epochs} epochs, {describe(strategy)}, "
          f"global batch {global_batch}" + (f"; resuming after epoch {resumed}" if resumed else ""), flush=True)

    # EMA: validation (so early stopping and the choice of the best epoch) runs on the averaged weights,
    # swapped in before it and back after it, so the backup always holds the raw weights + the averages.
    ema_swap = keras.callbacks.SwapEMAWeights() if cfg.train.ema else None
    monitor = _FoldMonitor(out, fold, len(train_df), cfg.train.patience, resume_epochs=resumed, ema_swap=ema_swap)
    # The monitor runs before the backup: a kill between the two redoes the epoch rather than losing it.
    callbacks = [*([ema_swap] if ema_swap else []), monitor,
                 keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)]
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False, profile_batch=0))
    callbacks += list(extra_callbacks)
    t0 = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.train.epochs, callbacks=callbacks, shuffle=False,
              verbose=cfg.train.verbose)
    seconds = time.perf_counter() - t0
    if monitor.best_epoch < 0:
        raise ValueError(f"fold {fold}: val RMSE was never finite (training diverged); no model was saved. "
                         f"Lower train.learning_rate or set train.clip_norm.")

    # The OOF is predicted the way the submission is (TTA views averaged, clipped): the CV scores it.
    best = load_model(out / MODEL_FILE)
    oof = val_df[[ID, FOLD, TARGET]].copy()
    oof["pred"] = predict_models([best], val_ds, cfg.predict.tta)
    atomic_write_csv(out / "oof.csv", oof)
    metrics = {
        "fold": fold,
        "n_folds": n_folds,
        "val_rmse": rmse(oof[TARGET], oof["pred"]),
        "tta": cfg.predict.tta,  # the views the OOF was predicted with; the ensemble recomputes it for others
        "best_epoch": monitor.best_epoch,
        "epochs": len(monitor.rows),
        "epochs_planned": cfg.train.epochs,
        "resumed_after_epoch": resumed,
        "replicas": replicas,
        "global_batch": global_batch,
        "n_train": len(train_df),
        "n_val": len(val_df),
        "seconds": seconds,
        "train_images_per_second": len(train_df) * len(monitor.rows) / max(monitor.train_seconds, 1e-9),
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
