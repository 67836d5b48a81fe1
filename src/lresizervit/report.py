"""A readable report of one trained experiment: `models/<exp>/report/` with four PNGs and `report.md`.

It reads only the training artefacts of the contract in DESIGN.md (`cv.json`, `oof.csv`, each
`fold_<k>/history.csv` and `metrics.json`, and the resizer's output on a few photos that the trainer saved in
`fold_0/resizer_samples.npz`); never the test set, and it does not import TensorFlow. Only for an experiment
trained before that file existed does it load the fold-0 model, the folds file and the train images instead.
Every file is written atomically and `report.md` last, so a report.md on disk has its figures.

Figures are drawn on `matplotlib.figure.Figure` with an explicit Agg canvas rather than through pyplot:
no global backend is switched, no figure registry fills up, and other matplotlib users are unaffected.
"""

from __future__ import annotations

import json
import math
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lresizervit.config import Config
from lresizervit.inference.predict import cv_verdict
from lresizervit.io_utils import atomic_write_bytes, atomic_write_text
from lresizervit.run import (
    CV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    OOF_FILE,
    REPORT_DIR,
    SAMPLES_FILE,
    fold_file,
    fold_model_file,
    read_oof,
)
from lresizervit.task import FOLD, Task, rmse

__all__ = [
    "FIGURES",
    "REPORT_DIR",
    "load_history",
    "residual_bins",
    "write_report",
]

FIGURES = {
    "learning_curves": "learning_curves.png",
    "oof_scatter": "oof_scatter.png",
    "residual_by_bin": "residual_by_bin.png",
    "resizer": "resizer.png",
}
HISTORY_COLUMNS = ("epoch", "rmse", "val_rmse")
WIDTH_IN = 8.0
DPI = 120
# Sizes chosen so an 8 in figure shrunk to a phone's width still has legible text.
_STYLE = {
    "font.size": 13,
    "axes.titlesize": 13,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.titlesize": 14,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what}); is every fold trained and `cv` run?")
    return path


def _new_figure(height_in: float, **kwargs: Any) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = BytesIO()
    # No "Software" stamp: the same run gives byte-identical PNGs whatever matplotlib version drew them.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    return buf.getvalue()


def load_history(run_dir: Path, fold: int) -> pd.DataFrame:
    """`fold_<k>/history.csv`, checked for the columns the learning curves need."""
    path = _require(fold_file(run_dir, fold, HISTORY_FILE), f"the training history of fold {fold}")
    hist = pd.read_csv(path)
    missing = [c for c in HISTORY_COLUMNS if c not in hist.columns]
    if missing or hist.empty:
        raise ValueError(f"{path}: needs one row per epoch with columns {list(HISTORY_COLUMNS)}; "
                         f"{'missing ' + str(missing) if missing else 'no rows'}")
    return hist


def _best_epoch(run_dir: Path, fold: int, hist: pd.DataFrame) -> int:
    """The epoch whose model was kept: metrics.json says so; the history's first minimum otherwise."""
    metrics = fold_file(run_dir, fold, METRICS_FILE)
    if metrics.is_file():
        return int(json.loads(metrics.read_text())["best_epoch"])
    return int(hist["epoch"].iloc[int(np.nanargmin(hist["val_rmse"].to_numpy()))])


# ---- 1. learning curves -------------------------------------------------------------------------------


def _learning_curves(run_dir: Path, cv: dict, target: str) -> bytes:
    n = int(cv["n_folds"])
    histories = [load_history(run_dir, k) for k in range(n)]
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig = _new_figure(1.2 + 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    const, floor = cv["constant_baseline_rmse"], cv.get("noise_floor_rmse")
    last = max(int(h["epoch"].max()) for h in histories)
    for k, (ax, hist) in enumerate(zip(axes, histories, strict=False)):
        best = _best_epoch(run_dir, k, hist)
        # Markers too: a 1-epoch run is a single point, which a bare line would not draw.
        ax.plot(hist["epoch"], hist["rmse"], "o--", color="tab:blue", ms=4, label="train")
        ax.plot(hist["epoch"], hist["val_rmse"], "o-", color="tab:orange", ms=4, label="validation")
        row = hist[hist["epoch"] == best]
        if not row.empty:
            # Hollow, so the validation point under it stays visible.
            ax.plot(best, row["val_rmse"].iloc[0], "*", mfc="none", mec="black", mew=1.5, ms=18,
                    label="best epoch (kept)")
        ax.axhline(const, color="grey", lw=1.5, label=f"constant mean ({const:.2f})")
        if floor:
            ax.axhline(floor, color="tab:green", lw=1.5, ls=":", label=f"noise floor ({floor:.2f})")
        best_val = row["val_rmse"].iloc[0] if not row.empty else float("nan")
        ax.set_title(f"fold {k}: best epoch {best}, val {best_val:.2f}")
        # Whole epochs only: a short run would otherwise get ticks such as 0.6, 0.8, ...
        ax.set_xlim(0.5, last + 0.5)
        if last <= 8:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        if k % ncols == 0:
            ax.set_ylabel(f"RMSE ({target})")
        if k >= n - ncols:
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Learning curves (train: augmented, running mean over the epoch)")
    return _png_bytes(fig)


# ---- 2. OOF scatter -----------------------------------------------------------------------------------


def _oof_scatter(oof: pd.DataFrame, cv: dict, task: Task) -> bytes:
    TARGET = task.target_column
    fig = _new_figure(7.6)
    ax = fig.subplots()
    n = len(oof)
    # Thousands of points (9,912 in the competition) need small, translucent markers to show density.
    size, alpha = (30, 0.8) if n <= 500 else (8, 0.35)
    for k, part in oof.groupby(FOLD, sort=True):
        ax.scatter(part[TARGET], part["pred"], s=size, alpha=alpha, edgecolors="none",
                   label=f"fold {k} (RMSE {rmse(part[TARGET], part['pred']):.2f})")
    pad = (task.hi - task.lo) / 100
    lo, hi = task.lo - pad, task.hi + pad
    ax.plot([lo, hi], [lo, hi], color="black", lw=1.2, label="perfect (y = x)")
    ax.axhline(oof[TARGET].mean(), color="grey", lw=1.2, ls=":", label=f"mean {TARGET}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {TARGET}")
    ax.set_ylabel(f"predicted {TARGET} (out of fold)")
    ax.set_title(f"OOF predictions: CV RMSE {cv['cv_rmse']:.3f} ({n} images)")
    ax.legend(loc="upper left", markerscale=1.5 if n <= 500 else 3)
    return _png_bytes(fig)


# ---- 3. residuals per target bin ---------------------------------------------------------------------


def residual_bins(oof: pd.DataFrame, task: Task, n_bins: int = 10) -> pd.DataFrame:
    """Per target bin (Pawpularity: 1-10, 11-20, ...): n, mean residual (pred - true), RMSE, mean true and
    pred. Integer targets get whole-number bins (lo-1, lo-1+w], ...; real ones n_bins equal widths."""
    if task.integer_target:
        width = math.ceil((task.hi - task.lo + 1) / n_bins)
        edges = task.lo - 1 + width * np.arange(n_bins + 1, dtype=np.float64)
        edges[-1] = max(edges[-1], task.hi)
    else:
        edges = np.linspace(task.lo, task.hi, n_bins + 1)
    true = oof[task.target_column].to_numpy(np.float64)
    pred = oof["pred"].to_numpy(np.float64)
    # (0, 10], (10, 20], ...: Pawpularity's targets are integers 1..100, so the first bin is 1-10.
    idx = np.digitize(true, edges[1:-1], right=True)
    rows = []
    for b in range(len(edges) - 1):
        mask = idx == b
        res = pred[mask] - true[mask]
        lo, hi = (int(edges[b]) + 1, int(edges[b + 1])) if task.integer_target else (edges[b], edges[b + 1])
        rows.append({
            "bin": f"{lo:g}–{hi:g}" if not task.integer_target else f"{lo}–{hi}",
            "lo": lo,
            "hi": hi,
            "n": int(mask.sum()),
            "mean_residual": float(res.mean()) if mask.any() else float("nan"),
            "rmse": float(np.sqrt(np.mean(res**2))) if mask.any() else float("nan"),
            "mean_true": float(true[mask].mean()) if mask.any() else float("nan"),
            "mean_pred": float(pred[mask].mean()) if mask.any() else float("nan"),
        })
    return pd.DataFrame(rows)


def _residual_figure(oof: pd.DataFrame, cv: dict, task: Task) -> tuple[bytes, pd.DataFrame]:
    bins = residual_bins(oof, task)
    TARGET = task.target_column
    x = np.arange(len(bins))
    fig = _new_figure(8.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = np.where(bins["mean_residual"] >= 0, "tab:red", "tab:blue")
    top.bar(x, bins["mean_residual"].fillna(0), color=colours, alpha=0.85, label="model")
    # What predicting the mean everywhere would give: the ceiling of "regression to the mean".
    const = oof[TARGET].mean() - bins["mean_true"]
    top.plot(x, const, "k_", ms=22, mew=2.5, label="constant mean")
    top.axhline(0, color="black", lw=1)
    top.set_ylabel("mean residual\n(pred − true)")
    top.set_title(f"Residuals per {TARGET} bin")
    top.legend(loc="upper right")
    bottom.bar(x, bins["rmse"].fillna(0), color="tab:purple", alpha=0.85)
    bottom.axhline(cv["cv_rmse"], color="black", lw=1.2, ls="--", label=f"CV RMSE {cv['cv_rmse']:.2f}")
    bottom.set_ylabel("RMSE")
    bottom.set_xlabel(f"true {TARGET} (n = images in the bin)")
    bottom.legend(loc="upper center")
    bottom.set_xticks(x, [f"{b}\nn={n}" for b, n in zip(bins["bin"], bins["n"], strict=True)], fontsize=12)
    return _png_bytes(fig), bins


# ---- 4. what the resizer learned ---------------------------------------------------------------------


def _resizer_samples(cfg: Config) -> tuple[dict | None, str]:
    """The arrays the trainer saved for fold 0 (resizer_samples.py); computed from the fold-0 model when an
    experiment trained before that file existed has none (this imports TensorFlow). (None, why) otherwise."""
    from lresizervit.resizer_samples import compute_samples, read_samples

    saved = fold_file(cfg.run_dir, 0, SAMPLES_FILE)
    if saved.is_file():
        return read_samples(saved), ""
    model_path = fold_model_file(cfg.run_dir, 0)
    if not model_path.is_file():
        return None, f"the fold-0 model {model_path} is missing"
    from lresizervit.models.fold_model import load_fold_model

    return compute_samples(cfg, load_fold_model(model_path), name=str(model_path))


def _resizer_figure(cfg: Config) -> tuple[bytes | None, str]:
    """(PNG, caption) or (None, why it was skipped)."""
    mode = cfg.model.resizer.mode
    if mode != "learned":
        return None, f"model.resizer.mode is {mode!r}: there is no learned resizer to show"
    samples, why = _resizer_samples(cfg)
    if samples is None:
        return None, why
    images, interpolation, targets = samples["image"], samples["interpolation"], samples["target"]
    learned, plain = samples["learned"].astype(np.float32), samples["plain"].astype(np.float32)
    size = images.shape[1]
    outside = float(np.mean(np.abs(learned) > 1.0))
    diff = (learned - plain).mean(axis=-1)
    scale = float(np.max(np.abs(diff))) or 1.0
    th, tw = learned.shape[1:3]

    rows = len(images)
    fig = _new_figure(1.4 + 2.05 * rows)
    axes = fig.subplots(rows, 4, squeeze=False)
    titles = [f"input {size}×{size}", f"{interpolation} {th}×{tw}", f"learned {th}×{tw}",
              f"learned − {interpolation}\n(±{scale:.2f})"]
    for r in range(rows):
        panels = [
            (images[r], "auto", {}),
            # nearest: the viewer must not smooth the few output pixels into something they are not.
            ((np.clip(plain[r], -1, 1) + 1) / 2, "nearest", {}),
            ((np.clip(learned[r], -1, 1) + 1) / 2, "nearest", {}),
            (diff[r], "nearest", {"cmap": "coolwarm", "vmin": -scale, "vmax": scale}),
        ]
        for c, (img, interp, kw) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation=interp, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                ax.set_title(titles[c], fontsize=12)
        axes[r, 0].set_ylabel(f"{targets[r]:g}", rotation=0, labelpad=18, va="center")
    fig.supylabel(f"true {cfg.task.target_column}")
    fig.suptitle("What the learned resizer does (fold 0 validation images)")
    fig.supxlabel(f"Learned output clipped to [-1, 1] for display ({outside:.1%} of its values lie outside).\n"
                  f"Right: learned − {interpolation}, mean over RGB, red = brighter.", fontsize=12)
    caption = (f"for {rows} fold-0 validation images: the input as the model sees it ({size}×{size}), a plain "
               f"antialiased {interpolation} resize to {th}×{tw}, the learned resizer's output (clipped "
               f"to [-1, 1] for display: its output is unbounded, and {outside:.1%} of its values lie outside) "
               f"and the difference learned − {interpolation} (mean over RGB, symmetric scale ±{scale:.2f}).")
    return _png_bytes(fig), caption


# ---- report.md -----------------------------------------------------------------------------------------


def _markdown_cv_table(cfg: Config) -> str:
    """`format_table`'s text as Markdown: its table kept, its other lines as a list (no fixed-width layout)."""
    from lresizervit.inference.predict import format_table

    out: list[str] = []
    prev_table = None
    for line in format_table(cfg).splitlines():
        if not line.strip():
            out.append("")
            prev_table = None
            continue
        is_table = line.lstrip().startswith("|")
        if prev_table is not None and prev_table != is_table:
            out.append("")  # Markdown needs a blank line between a list and a table
        out.append(line if is_table else "- " + " ".join(line.split()))
        prev_table = is_table
    return "\n".join(out)


def _section(title: str, file: str, alt: str, sentence: str) -> str:
    return f"## {title}\n\n![{alt}]({file})\n\n{sentence}\n"


def write_report(cfg: Config) -> Path:
    """Write `<run_dir>/report/` (4 PNGs, or 3 without a learned resizer, and report.md); returns report.md.

    `cfg` should be the run's own config (`run.trained_config`); `data.dir` and `data.folds_csv` are read
    only for an experiment whose fold 0 has no resizer_samples.npz. Missing required artefacts raise
    `FileNotFoundError` naming the file; the optional resizer figure is skipped with a note instead (a
    damaged fold_0/resizer_samples.npz is a `ValueError` naming it: delete it and rerun).
    """
    run = Path(cfg.run_dir)
    task = cfg.task
    cv = json.loads(_require(run / CV_FILE, "written by `lresizervit cv` once every fold is trained").read_text())
    oof = read_oof(_require(run / OOF_FILE, "the concatenated out-of-fold predictions"), task.id_column)
    for k in range(int(cv["n_folds"])):
        _require(fold_file(run, k, METRICS_FILE), f"fold {k} is not complete")
    out_dir = run / REPORT_DIR

    # rc_context: the larger fonts apply to these figures only, not to the caller's matplotlib.
    with matplotlib.rc_context(_STYLE):
        curves = _learning_curves(run, cv, task.target_column)
        scatter = _oof_scatter(oof, cv, task)
        residuals, bins = _residual_figure(oof, cv, task)
        resizer_png, resizer_note = _resizer_figure(cfg)
    atomic_write_bytes(out_dir / FIGURES["learning_curves"], curves)
    atomic_write_bytes(out_dir / FIGURES["oof_scatter"], scatter)
    atomic_write_bytes(out_dir / FIGURES["residual_by_bin"], residuals)
    if resizer_png is not None:
        atomic_write_bytes(out_dir / FIGURES["resizer"], resizer_png)
    else:
        # A figure left from an earlier report would no longer describe this run.
        (out_dir / FIGURES["resizer"]).unlink(missing_ok=True)

    const, floor = cv["constant_baseline_rmse"], cv.get("noise_floor_rmse")
    floor_text = f" and the dotted green line the data set's noise floor ({floor:.2f})" if floor else ""
    filled = bins[bins["n"] > 0]
    lo_res, hi_res = filled["mean_residual"].iloc[0], filled["mean_residual"].iloc[-1]
    shrink = ("the model pulls extreme scores towards the mean, as is typical in this competition"
              if lo_res > 0 > hi_res else "no clear pull towards the mean")
    sections = [
        _section("Learning curves", FIGURES["learning_curves"], "learning curves per fold",
                 "Train (dashed; measured on augmented images, averaged over each epoch) and validation RMSE "
                 f"(solid) per epoch and fold, in {task.target_column} units; the star marks the epoch whose model was "
                 f"kept, the grey line the constant-mean baseline ({const:.2f}){floor_text}."),
        _section("Out-of-fold predictions", FIGURES["oof_scatter"], "OOF predicted vs true",
                 f"Predicted against true {task.target_column} for all {len(oof)} training images, each predicted by the "
                 f"fold that did not train on it (CV RMSE {cv['cv_rmse']:.3f}); the predictions' spread "
                 f"(std {oof['pred'].std():.1f}) against the targets' ({oof[task.target_column].std():.1f}) shows how much "
                 "the model shrinks towards the mean."),
        _section("Residuals by target bin", FIGURES["residual_by_bin"], f"residuals per {task.target_column} bin",
                 "Mean residual (prediction − truth; the black dashes are what predicting the mean would give) "
                 f"and RMSE per {task.target_column} bin, with the number of images in each: from "
                 f"{lo_res:+.1f} in the lowest populated bin to {hi_res:+.1f} in the highest, {shrink}."),
    ]
    if resizer_png is not None:
        sections.append(_section("What the resizer learned", FIGURES["resizer"], "learned resizer output",
                                 resizer_note[0].upper() + resizer_note[1:]))
    else:
        sections.append(f"## What the resizer learned\n\n_Figure skipped: {resizer_note}._\n")
    text = "\n".join([
        f"# Report: {cfg.name}",
        "",
        f"Out-of-fold results of `{run}` (no test data is used). RMSE is in {task.target_column} units "
        f"({task.lo:g}–{task.hi:g}).",
        "",
        "## Cross-validation",
        "",
        _markdown_cv_table(cfg),
        "",
        *([f"**{verdict}**", ""] if (verdict := cv_verdict(cv)) else []),
        *sections,
    ]).rstrip("\n") + "\n"
    return atomic_write_text(out_dir / "report.md", text)
