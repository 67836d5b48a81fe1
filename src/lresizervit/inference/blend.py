"""Blend weights fitted on the out-of-fold predictions, and the blend of an ensemble's members.

The weights are non-negative and sum to 1; they are fitted on the concatenated OOF only, so the test set
never influences them. The members and their predictions come from `ensemble.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lresizervit.task import FOLD, Task, rmse

if TYPE_CHECKING:
    from lresizervit.inference.ensemble import Member


def fit_blend_weights(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights w >= 0 with sum 1 minimising the RMSE of `preds @ w` against `target` (preds: [N, M])."""
    from scipy.optimize import minimize

    preds = np.asarray(preds, np.float64)
    target = np.asarray(target, np.float64)
    if preds.ndim != 2 or len(preds) != len(target) or len(target) == 0:
        raise ValueError(f"blend: predictions of shape {preds.shape} for {len(target)} targets")
    m = preds.shape[1]
    if m == 1:
        return np.ones(1)
    gram, rhs = preds.T @ preds / len(target), preds.T @ target / len(target)

    def loss(w):  # the mean squared error, up to a constant, and its gradient
        return w @ gram @ w - 2 * w @ rhs, 2 * (gram @ w - rhs)

    res = minimize(loss, np.full(m, 1.0 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                   options={"ftol": 1e-12, "maxiter": 500})
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def out_of_fold_blend(preds: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Task) -> np.ndarray:
    """Each fold's rows blended by weights fitted on the other folds only, clipped to the target range."""
    preds, target, folds = np.asarray(preds, np.float64), np.asarray(target, np.float64), np.asarray(folds)
    out = np.empty(len(target))
    for k in np.unique(folds):
        held = folds == k
        out[held] = preds[held] @ fit_blend_weights(preds[~held], target[~held])
    return task.clip(out)


def nested_blend_rmse(preds: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Task) -> float:
    """What the weights are worth on rows they never saw (the plain blend CV reuses the rows that fitted
    them, which flatters it a little)."""
    return rmse(target, out_of_fold_blend(preds, target, folds, task))


def blend(members: list[Member]) -> dict:
    """Fit the blend weights on the members' OOF (aligned by id) and score them."""
    task = members[0].task
    for m in members[1:]:
        if (m.task.id_column, m.task.target_column, m.task.target_range) != \
                (task.id_column, task.target_column, task.target_range):
            raise ValueError(f"{m.experiment} was trained for another task than {members[0].experiment} "
                             "(other id/target columns or target range): blend only one task's experiments")
    ID, TARGET = task.id_column, task.target_column
    base = members[0].oof
    ids = set(base[ID])
    frames = []
    for m in members:
        if m.oof is None:
            raise ValueError(f"{m.experiment}: no oof.csv to fit blend weights on; run `python -m lresizervit cv`")
        if set(m.oof[ID]) != ids or len(m.oof) != len(base):
            raise ValueError(f"experiments {members[0].experiment} and {m.experiment} have OOF predictions for "
                             "different training rows: blend only experiments trained on the same train.csv")
        frames.append(m.oof.set_index(ID).loc[base[ID]])
    target = base[TARGET].to_numpy(np.float64)
    for m, f in zip(members, frames, strict=True):
        if not np.allclose(f[TARGET].to_numpy(np.float64), target):
            raise ValueError(f"{m.experiment}: its OOF targets differ from {members[0].experiment}'s for the same "
                             "Ids: the experiments were trained on different labels")
    preds = np.column_stack([f["pred"].to_numpy(np.float64) for f in frames])
    w = fit_blend_weights(preds, target)
    blended = task.clip(preds @ w)
    folds = base[FOLD].to_numpy()
    nested = nested_blend_rmse(preds, target, folds, task) if len(members) > 1 else None
    return {"weights": w, "cv_rmse": rmse(target, blended), "cv_rmse_weights_out_of_fold": nested,
            "n_oof": len(target)}


def format_members(summary: dict) -> str:
    """The blend table: each member's CV next to its weight, then what the blend gained."""
    lines = ["| member | kind | TTA | CV RMSE | weight |", "|---|---|---|---:|---:|"]
    for m in summary["members"]:
        cv = "n/a" if m["cv_rmse"] is None else f"{m['cv_rmse']:.3f}"
        lines.append(f"| {m['name']} | {m['kind']} | {m['tta']} | {cv} | {m['weight']:.3f} |")
    if summary["blend_cv_rmse"] is not None:
        best = min(m["cv_rmse"] for m in summary["members"])
        lines += ["", f"blend CV RMSE (weights fitted on all {summary['n_oof']} OOF rows): "
                      f"{summary['blend_cv_rmse']:.3f}   (best member {best:.3f})"]
        if summary["blend_cv_rmse_weights_out_of_fold"] is not None:
            lines.append("blend CV RMSE, each fold blended by weights fitted on the other folds: "
                         f"{summary['blend_cv_rmse_weights_out_of_fold']:.3f}")
    return "\n".join(lines)

