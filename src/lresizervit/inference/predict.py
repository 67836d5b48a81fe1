"""The fold models of a trained experiment and its CV table. Predicting the test set (one experiment or a
blend of several) lives in `ensemble.py`; the models are reloaded from `models/<exp>/`, never rebuilt from
today's config defaults."""

from __future__ import annotations

import json
from pathlib import Path

from lresizervit.config import Config
from lresizervit.training.trainer import MODEL_FILE, fold_dir


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
        member = (summary.get("members") or [{}])[0]
        if member.get("cv_rmse") is not None and abs(member["cv_rmse"] - cv["cv_rmse"]) > 5e-4:
            # The table above is the training's OOF; this submission used other TTA views, re-predicted.
            lines.append(f"CV RMSE with TTA {member['tta']} (OOF re-predicted):  {member['cv_rmse']:.3f}")
        if "test_rmse" in summary:
            lines.append(f"hidden-test RMSE of the submission:    {summary['test_rmse']:.3f}")
        lines.append(
            f"submission: {summary['submission']}  ({summary['n_test']} rows, {summary['models']} folds x "
            f"{summary['tta_views']} TTA views, {summary['images_per_second']:.1f} test images/s)"
        )
    return "\n".join(lines)
