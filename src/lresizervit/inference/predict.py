"""Predict the test set with every fold model of an experiment (folds × TTA averaged) and write the
submission. The models are rebuilt from `models/<exp>/`, never from today's config defaults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from lresizervit.config import Config
from lresizervit.data.schema import ID, META_COLUMNS, TARGET, check_images, read_table
from lresizervit.inference.submission import write_submission
from lresizervit.inference.tta import predict_models, tta_views
from lresizervit.models.regressor import load_model
from lresizervit.training.trainer import MODEL_FILE, fold_dir, rmse


def fold_models(run_dir: Path) -> list[Path]:
    """The model of every fold, or an error naming the folds that are missing or unfinished."""
    run_dir = Path(run_dir)
    cv_path = run_dir / "cv.json"
    metrics = sorted(run_dir.glob("fold_*/metrics.json"))
    if cv_path.is_file():
        n_folds = json.loads(cv_path.read_text())["n_folds"]
    elif metrics:
        n_folds = json.loads(metrics[0].read_text())["n_folds"]
    else:
        raise FileNotFoundError(f"{run_dir}: no trained fold (run bash train_folds.sh with its config)")
    missing = [k for k in range(n_folds) if not (fold_dir(run_dir, k) / "metrics.json").is_file()
               or not (fold_dir(run_dir, k) / MODEL_FILE).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir}: folds {missing} of {n_folds} are not trained; a submission from some folds only "
            f"would silently differ from the CV. Train them: bash train_folds.sh CONFIG {' '.join(map(str, missing))}"
        )
    return [fold_dir(run_dir, k) / MODEL_FILE for k in range(n_folds)]


def predict_test(cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Average every fold model over the TTA views of the test set; returns (predictions, timing)."""
    from lresizervit.data.pipeline import make_dataset

    data_dir = Path(cfg.data.dir)
    test_csv = data_dir / "test.csv"
    test = read_table(test_csv, "test")
    paths = check_images(test, data_dir / "test", str(test_csv))
    t_load = time.perf_counter()
    models = [load_model(path) for path in fold_models(cfg.run_dir)]
    t0 = time.perf_counter()
    ds = make_dataset(paths, test[list(META_COLUMNS)].to_numpy("float32"), None,
                      image_size=cfg.data.image_size, batch_size=cfg.predict.batch_size, training=False)
    pred = predict_models(models, ds, cfg.predict.tta)
    seconds = time.perf_counter() - t0
    views = len(tta_views(cfg.predict.tta))
    timing = {"models": len(models), "tta_views": views, "seconds": seconds,
              "load_seconds": t0 - t_load,
              "images_per_second": len(test) / max(seconds, 1e-9),
              "forward_passes_per_second": len(test) * len(models) * views / max(seconds, 1e-9)}
    return pd.DataFrame({ID: test[ID], TARGET: pred}), timing


def run_predict(cfg: Config, out_path: str | None = None) -> dict:
    """Predict, check and write `submissions/<name>.csv`; returns a summary for the CV table."""
    pred, timing = predict_test(cfg)
    out = Path(out_path) if out_path else Path(cfg.predict.out_dir) / f"{cfg.name}.csv"
    # Checked against test.csv read anew, not against the frame the predictions came in.
    test_ids = read_table(Path(cfg.data.dir) / "test.csv", "test")[ID].tolist()
    write_submission(pred[ID], pred[TARGET], test_ids, out)
    summary = {"submission": str(out), "n_test": len(pred), **timing}
    labels = Path(cfg.data.dir) / "test_labels.csv"
    if labels.is_file():
        # Only the synthetic generator writes hidden test labels: score the submission as Kaggle would.
        truth = pd.read_csv(labels, dtype={ID: str}).set_index(ID)[TARGET]
        sub = pd.read_csv(out, dtype={ID: str})
        summary["test_rmse"] = rmse(truth.loc[sub[ID]].to_numpy(), sub[TARGET].to_numpy())
    return summary


def format_table(cfg: Config, summary: dict | None = None) -> str:
    """The CV table the demo prints: per-fold val RMSE, CV RMSE, the baselines, the submission."""
    cv_path = cfg.run_dir / "cv.json"
    if not cv_path.is_file():
        return f"{cv_path}: not written yet (every fold must finish first)"
    cv = json.loads(cv_path.read_text())
    lines = [f"experiment {cfg.name}  ({cfg.run_dir})", "", "| fold | val RMSE | best epoch | seconds |",
             "|---:|---:|---:|---:|"]
    for k in range(cv["n_folds"]):
        m = json.loads((fold_dir(cfg.run_dir, k) / "metrics.json").read_text())
        lines.append(f"| {k} | {m['val_rmse']:.3f} | {m['best_epoch']} | {m['seconds']:.0f} |")
    const = cv["constant_baseline_rmse"]
    lines += [
        "",
        f"CV RMSE (concatenated OOF, {cv['n_oof']} rows): {cv['cv_rmse']:.3f}"
        f"   (folds {cv['fold_rmse_mean']:.3f} ± {cv['fold_rmse_std']:.3f})",
        f"constant-mean baseline:                {const:.3f}   (CV / baseline = {cv['cv_rmse'] / const:.2f})",
    ]
    if cv.get("noise_floor_rmse"):
        nf = cv["noise_floor_rmse"]
        lines.append(f"noise floor of the data set:           {nf:.3f}   (CV / floor = {cv['cv_rmse'] / nf:.2f})")
    if summary:
        if "test_rmse" in summary:
            lines.append(f"hidden-test RMSE of the submission:    {summary['test_rmse']:.3f}")
        lines.append(
            f"submission: {summary['submission']}  ({summary['n_test']} rows, {summary['models']} folds x "
            f"{summary['tta_views']} TTA views, {summary['images_per_second']:.1f} test images/s)"
        )
    return "\n".join(lines)
