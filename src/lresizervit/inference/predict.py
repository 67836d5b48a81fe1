"""The CV table of a trained experiment. Predicting the test set (one experiment or a blend of several)
lives in `ensemble.py`; the experiment folder's files are named in `run.py`."""

from __future__ import annotations

from lresizervit.config import Config
from lresizervit.run import read_cv, read_metrics

# A CV within this fraction of the constant-mean baseline is no evidence the model learned anything.
USELESS_RATIO = 0.97


def cv_verdict(cv: dict) -> str | None:
    """A plain warning when the CV is no better than predicting the training mean, else None."""
    ratio = cv["cv_rmse"] / cv["constant_baseline_rmse"]
    if ratio < USELESS_RATIO:
        return None
    how = "worse than" if ratio >= 1 else f"within {100 * (1 - USELESS_RATIO):.0f} % of"
    return (f"WARNING: the CV is {how} predicting each fold's training mean (CV / baseline = {ratio:.2f}): the "
            "model learned nothing usable. A backbone trained from scratch needs far more images than this; "
            "fine-tune a pretrained one (configs/default.yaml, README: Pretrained backbones).")


def format_table(cfg: Config, summary: dict | None = None) -> str:
    """The CV table the demo prints: per-fold val RMSE, CV RMSE, the baselines, the submission."""
    cv = read_cv(cfg.run_dir)
    if cv is None:
        return f"{cfg.run_dir}: no CV yet (every fold must finish first)"
    lines = [f"experiment {cfg.name}  ({cfg.run_dir})", "", "| fold | val RMSE | best epoch | seconds |",
             "|---:|---:|---:|---:|"]
    for k in range(cv["n_folds"]):
        m = read_metrics(cfg.run_dir, k)
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
    verdict = cv_verdict(cv)
    if verdict:
        lines += ["", verdict]
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
