"""Train one fold (one process per fold frees accelerator memory between folds).

Its artefacts, all written atomically, are the experiment folder's (`lresizervit/run.py` names them):
the model, history, OOF and metrics of the fold, its backup while training, and cv.json once every fold is
complete. Under multi-worker training the chief writes models/<exp>/, worker i models/.worker_<i>/<exp>/.

A fold killed mid-training resumes from its last completed epoch when trained again (Keras
BackupAndRestore restores weights, optimizer state and the epoch; history.csv and the best score are
restored from the files). The backup is kept until metrics.json is written, so a fold that stopped after
its last epoch (a full disk while writing its OOF) only predicts its OOF again. A complete fold
(metrics.json exists) is skipped unless `force`. With a time budget (LRESIZERVIT_DEADLINE, training/deadline.py)
a fold that would not end in time stops at an epoch end, left unfinished with its backup, or does not start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import pandas as pd

from lresizervit.config import Config
from lresizervit.io_utils import (
    atomic_write_csv,
    atomic_write_json,
    ensure_free_space,
    named_os_error,
)
from lresizervit.models.fold_model import load_fold_model, save_fold_model
from lresizervit.models.regressor import (
    backbone_variables,
    build_regressor,
    make_loss,
    metadata_stats,
)
from lresizervit.models.tta import predict_models, tta_views
from lresizervit.resizer_samples import write_samples
from lresizervit.run import (
    BACKUP_DIR,
    HISTORY_FILE,
    LEGACY_MODEL_FILE,
    LOGS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_SPEC_FILE,
    OOF_FILE,
    SAMPLES_FILE,
    ensure_run_config,
    write_cv,
)
from lresizervit.task import FOLD, rmse
from lresizervit.training.backup import backup_callback, backup_epoch, file_size
from lresizervit.training.deadline import Deadline, TimeBudgetExceeded, stop_callback
from lresizervit.training.optimizer import DECAY_EXCLUDED, GroupedAdamW, backbone_multipliers
from lresizervit.training.preflight import FoldPlan, check_inputs, plan_fold, skip_complete


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
        history = out_dir / HISTORY_FILE
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
            path = self.out_dir / MODEL_FILE
            # The previous best stays whole if this one cannot be written (the temp file is removed).
            ensure_free_space(path, file_size(path) + 2**20)
            with self._weights_to_save():
                save_fold_model(self.model, self.out_dir)
        atomic_write_csv(self.out_dir / HISTORY_FILE, pd.DataFrame(self.rows))
        print(
            f"fold {self.fold} epoch {epoch + 1:3d}  loss {logs.get('loss', float('nan')):.4f}  "
            f"rmse {logs.get('rmse', float('nan')):6.2f}  val_rmse {val:6.2f}{' *' if improved else '  '}  "
            f"{self.n_train / max(train_s, 1e-9):6.1f} img/s  {now - self._t0:5.1f}s",
            flush=True,
        )
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            print(f"fold {self.fold}: no improvement for {self.patience} epochs, stopping early", flush=True)
            self.model.stop_training = True


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
                   val_paths: list[str], seed: int, batch_size: int, drop_remainder: bool = False):
    import tensorflow as tf

    from lresizervit.data.pipeline import make_dataset

    # AugmentConfig's fields are exactly augment.train_transform's keyword arguments.
    aug = dataclasses.asdict(cfg.augment)
    # One loader thread is the price of bit-reproducible augmentation (threads draw from one RNG).
    calls = 1 if cfg.train.deterministic else tf.data.AUTOTUNE
    common = {"image_size": cfg.data.image_size, "batch_size": batch_size, "cache": cfg.data.cache,
              "num_parallel_calls": calls}
    task = cfg.task
    train_ds = make_dataset(
        train_paths, train_df[task.metadata_columns].to_numpy("float32"),
        train_df[task.target_column].to_numpy("float32"), training=True, augment_kwargs=aug, shuffle_seed=seed,
        drop_remainder=drop_remainder, **common,
    )
    val_ds = make_dataset(
        val_paths, val_df[task.metadata_columns].to_numpy("float32"),
        val_df[task.target_column].to_numpy("float32"), training=False, **common,
    )
    return train_ds, val_ds


def make_optimizer(cfg: Config, model: keras.Model, schedule, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW; with a fine-tuning recipe (train.backbone_learning_rate, layer_decay, freeze_backbone_epochs)
    the one whose learning rate is multiplied per variable (training/optimizer.py)."""
    tc = cfg.train
    common = {"learning_rate": schedule, "weight_decay": tc.weight_decay, "global_clipnorm": tc.clip_norm or None,
              # The averages are optimizer variables: BackupAndRestore saves and restores them with the rest.
              "use_ema": tc.ema, "ema_momentum": tc.ema_momentum}
    if tc.backbone_learning_rate is None and tc.layer_decay == 1.0 and not tc.freeze_backbone_epochs:
        optimizer = keras.optimizers.AdamW(**common)
        optimizer.exclude_from_weight_decay(var_names=list(DECAY_EXCLUDED))
        return optimizer
    paths = [v.path for v in backbone_variables(model)]
    ratio = (tc.backbone_learning_rate or tc.learning_rate) / tc.learning_rate
    return GroupedAdamW(**common, multipliers=backbone_multipliers(paths, ratio, tc.layer_decay),
                        frozen=paths if tc.freeze_backbone_epochs else [],
                        unfreeze_step=tc.freeze_backbone_epochs * steps_per_epoch, decay_excluded=DECAY_EXCLUDED)


def compile_model(cfg: Config, steps_per_epoch: int, replicas: int = 1, train_df: pd.DataFrame | None = None
                  ) -> keras.Model:
    """Build and compile inside the caller's strategy scope. The learning rate scales with the replicas.

    `train_df` (the fold's training rows) gives the statistics of non-binary metadata columns and the
    target's mean, which the model stores; without it they are standardised by nothing and the MSE head
    starts at the middle of the range."""
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
    stats = metadata_stats(train_df, cfg.task) if train_df is not None else None
    target_mean = float(train_df[cfg.task.target_column].mean()) if train_df is not None else None
    model = build_regressor(cfg.model, cfg.data.image_size, cfg.task, metadata_stats=stats,
                            target_mean=target_mean)
    optimizer = make_optimizer(cfg, model, schedule, steps_per_epoch)
    model.compile(
        optimizer=optimizer,
        loss=make_loss(cfg.model, cfg.task),
        # Weighted: validation batches padded with zero-weight rows (on JAX) are scored on their real rows;
        # without weights (training, TensorFlow) the same RMSE. A plain `metrics=` entry ignores weights.
        weighted_metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    # The optimizer's slots exist before the first step: created inside it, they make tf.function trace the
    # whole train step twice (variables may be created only on a first trace, which is then redone):
    # 5-6 s per fold process for the demo-sized model on a 2-core CPU, more for a large backbone.
    optimizer.build(model.trainable_variables)
    return model


def _save_report_samples(cfg: Config, model, out) -> None:
    """What the report's resizer figure shows, so `report` needs no model. Only the report reads it: a
    failure here is a warning, never a fold left incomplete (the report then computes it from the model)."""
    try:
        why = write_samples(cfg, model, out)
    except Exception as exc:  # any failure: the fold itself is fine
        why = f"{type(exc).__name__}: {exc}"
    if why:
        print(f"warning: fold 0: the report's resizer samples were not saved ({why})", flush=True)


def train_fold(cfg: Config, fold: int, force: bool = False,
               extra_callbacks: Sequence[keras.callbacks.Callback] = (), deadline: Deadline | None = None,
               plan: FoldPlan | None = None) -> dict:
    """Train fold `fold` of the folds file and write its artefacts; returns its metrics.

    A complete fold is skipped (its metrics returned) unless `force`; a fold killed mid-training resumes.
    `extra_callbacks` run after the trainer's own, i.e. after the epoch's backup is written.
    With a `deadline` (default: LRESIZERVIT_DEADLINE's, training/deadline.py) a fold that would not end
    before it stops at an epoch end, unfinished and resumable, raising TimeBudgetExceeded.
    `plan`: what `training.preflight` read and checked of this fold before Keras started (the `train`
    command passes it); without it the same checks run here.
    """
    import shutil

    import tensorflow as tf

    from lresizervit.backend import select
    from lresizervit.training.placement import check_backend_support, make_placement, pad_batches
    from lresizervit.training.strategy import check_workers_agree, make_strategy

    select(cfg.train.backend)  # the CLI applied it before Keras started; in-process callers get the check
    check_backend_support(cfg)
    task = cfg.task
    plan = plan if plan is not None else plan_fold(cfg, fold, force)
    cfg, out, folds_df, n_folds, complete = plan.cfg, plan.out, plan.folds, plan.n_folds, plan.complete
    strategy = None
    if plan.worker is not None:
        # Collective ops are configured when the strategy is made, before TF runs anything else; a worker
        # that skips or resumes alone would leave the others waiting in a collective.
        strategy = make_strategy(cfg.train.strategy)
        resume = 0 if force or complete else backup_epoch(out / BACKUP_DIR)
        check_workers_agree(strategy, fold_complete=int(complete), resume_after_epoch=resume)
    if complete:
        return skip_complete(plan)
    deadline = deadline if deadline is not None else Deadline.from_env()
    views = len(tta_views(cfg.predict.tta))
    if deadline is not None:  # before the data and the model: a fold that cannot fit costs nothing
        deadline.check_start(cfg.run_dir, fold, cfg.train.epochs, views, 0 if force else backup_epoch(out / BACKUP_DIR))
    if not plan.inputs_checked:
        plan = check_inputs(plan)
    paths, rec_dir = plan.image_paths, plan.records_dir

    seed = cfg.train.seed + fold
    keras.utils.set_random_seed(seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    placement = make_placement(cfg.train.strategy, strategy)
    replicas = placement.replicas
    global_batch = cfg.train.batch_size * replicas
    in_val = (folds_df[FOLD] == fold).to_numpy()
    train_df, val_df = folds_df[~in_val].reset_index(drop=True), folds_df[in_val].reset_index(drop=True)
    if placement.equal_batches and len(train_df) < global_batch:
        raise ValueError(f"fold {fold} has {len(train_df)} training rows, fewer than one global batch of "
                         f"{global_batch} ({placement.description}, train.batch_size {cfg.train.batch_size} "
                         f"per replica): lower train.batch_size")
    if cfg.data.tfrecords:
        train_ds, val_ds = build_tfrecord_datasets(cfg, rec_dir, fold, n_folds, seed, global_batch,
                                                   placement.equal_batches)
    else:
        train_paths = [p for p, v in zip(paths, in_val, strict=True) if not v]
        val_paths = [p for p, v in zip(paths, in_val, strict=True) if v]
        train_ds, val_ds = build_datasets(cfg, train_df, val_df, train_paths, val_paths, seed, global_batch,
                                          drop_remainder=placement.equal_batches)
    steps = len(train_df) // global_batch if placement.equal_batches else math.ceil(len(train_df) / global_batch)
    # Built before the config is saved: a config the model refuses (a size not divisible by the patch, a
    # missing backbone) must not become the experiment's config.
    with placement.scope():
        model = compile_model(cfg, steps, replicas, train_df)
    ensure_run_config(cfg)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)  # the fold is incomplete until it is rewritten
    for stale in out.glob(".*.tmp*"):  # a killed run's half-written temp files (one process trains a fold)
        stale.unlink()
    backup = out / BACKUP_DIR
    resumed = backup_epoch(backup)
    if not resumed:
        # A fresh start: a model or OOF left by an earlier attempt must not stand in for this one.
        for name in (MODEL_FILE, MODEL_SPEC_FILE, LEGACY_MODEL_FILE, OOF_FILE, HISTORY_FILE, SAMPLES_FILE):
            (out / name).unlink(missing_ok=True)
    print(f"fold {fold}/{n_folds - 1}: {len(train_df)} train, {len(val_df)} val images, "
          f"{model.count_params():,} parameters, {cfg.train.epochs} epochs, {placement.description}, "
          f"global batch {global_batch}" + (f"; resuming after epoch {resumed}" if resumed else ""), flush=True)

    # EMA: validation (so early stopping and the choice of the best epoch) runs on the averaged weights,
    # swapped in before it and back after it, so the backup always holds the raw weights + the averages.
    ema_swap = keras.callbacks.SwapEMAWeights() if cfg.train.ema else None
    monitor = _FoldMonitor(out, fold, len(train_df), cfg.train.patience, resume_epochs=resumed, ema_swap=ema_swap)
    # The monitor runs before the backup: a kill between the two redoes the epoch rather than losing it.
    callbacks = [*([ema_swap] if ema_swap else []), monitor, backup_callback(backup, out / MODEL_FILE)]
    # After the backup: the epoch it stops after is saved, so the next session resumes from it.
    stop = stop_callback(deadline, fold, cfg.train.epochs, views) if deadline is not None else None
    callbacks += [stop] if stop is not None else []
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / LOGS_DIR), write_graph=False, profile_batch=0))
    callbacks += list(extra_callbacks)
    t0 = time.perf_counter()
    finished = resumed >= cfg.train.epochs or bool(
        cfg.train.patience and monitor.best_epoch > 0 and resumed - monitor.best_epoch >= cfg.train.patience)
    pad_to = global_batch if placement.pad_validation else 1
    if finished:
        print(f"fold {fold}: its {resumed} epochs were trained before; predicting its OOF", flush=True)
    else:
        try:
            with placement.scope():
                model.fit(train_ds, validation_data=pad_batches(val_ds, pad_to), epochs=cfg.train.epochs,
                          callbacks=callbacks, shuffle=False, verbose=cfg.train.verbose)
        except OSError as exc:
            if exc.filename:
                raise
            # Our own writes name their file; one that names none (a TensorBoard log) is named by its fold.
            raise named_os_error(exc, out) from exc
    seconds = time.perf_counter() - t0
    if stop is not None and stop.stopped:
        raise TimeBudgetExceeded(stop.stopped)  # unfinished on purpose: no OOF, no metrics, the backup kept
    if monitor.best_epoch < 0:
        raise ValueError(f"fold {fold}: val RMSE was never finite (training diverged); no model was saved. "
                         f"Lower train.learning_rate or set train.clip_norm.")

    # The OOF is predicted the way the submission is (TTA views averaged, clipped): the CV scores it.
    best = load_fold_model(out / MODEL_FILE, cfg)
    oof = val_df[[task.id_column, FOLD, task.target_column]].copy()
    oof["pred"] = predict_models([best], val_ds, cfg.predict.tta, task)
    atomic_write_csv(out / OOF_FILE, oof)
    if fold == 0 and cfg.model.resizer.mode == "learned":
        _save_report_samples(cfg, best, out)
    metrics = {
        "fold": fold,
        "n_folds": n_folds,
        "val_rmse": rmse(oof[task.target_column], oof["pred"]),
        "tta": cfg.predict.tta,  # the views the OOF was predicted with; the ensemble recomputes it for others
        "best_epoch": monitor.best_epoch,
        "epochs": len(monitor.rows),
        "epochs_planned": cfg.train.epochs,
        "resumed_after_epoch": resumed,
        "backend": keras.backend.backend(),
        "devices": placement.devices,
        "replicas": replicas,
        "global_batch": global_batch,
        "n_train": len(train_df),
        "n_val": len(val_df),
        "seconds": seconds,
        "train_images_per_second": len(train_df) * len(monitor.rows) / max(monitor.train_seconds, 1e-9),
        "parameters": int(model.count_params()),
    }
    atomic_write_json(out / METRICS_FILE, metrics)
    shutil.rmtree(backup, ignore_errors=True)  # the fold is complete: nothing left to resume
    print(f"fold {fold}: val RMSE {metrics['val_rmse']:.3f} (best epoch {monitor.best_epoch}), "
          f"{seconds:.0f}s", flush=True)
    write_cv(cfg)
    return metrics

