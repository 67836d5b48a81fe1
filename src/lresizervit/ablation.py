"""`python -m lresizervit ablation`: does the backbone gain from the full resolution, or from more layers?

On a synthetic data set whose stripes (part of the target) vanish in a plain resize to the backbone's
size, the same model and schedule are trained once per `model.resizer.mode` with the project's own
`train_folds.sh` (one process per fold, resumable: complete folds are skipped on a rerun):

- `learned`: the resizer's convolutions see the full resolution, then shrink;
- `conv_after_resize`: the same layers and parameter count after a plain resize (the "more layers" control);
- `bilinear`: the plain resize alone;
- `none` (optional, costly): the backbone sees the full resolution itself.

The table puts each mode's CV RMSE and per-fold spread next to the constant baseline, the detail-blind
floor (the best score without the stripes) and the noise floor (the best score at all).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from lresizervit.bench.machine import machine_description
from lresizervit.comparison import arm_result, detail_survival, ensure_synth_data, train_arm
from lresizervit.config import Config
from lresizervit.data.synth import SynthParams
from lresizervit.run import read_cv

MODES = ("learned", "conv_after_resize", "bilinear")
ALL_MODES = (*MODES, "none")


def run_ablation(config: str, cfg: Config, sets: tuple[str, ...] = (), modes: tuple[str, ...] = MODES,
                 n_train: int = 1500, seed: int = 1, repo: str | os.PathLike = ".") -> dict:
    """Generate the data (once), train each mode, and collect their CV into one result."""
    unknown = [m for m in modes if m not in ALL_MODES]
    if not modes or unknown:
        raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {', '.join(ALL_MODES)}")
    repo = Path(repo)
    t_start = time.perf_counter()
    params = SynthParams(seed=seed)
    info = ensure_synth_data(Path(cfg.data.dir), n_train, 50, params)
    survival = detail_survival(cfg.data.image_size, cfg.model.resizer.target_size, params)
    rows = {}
    for mode in modes:
        name = f"{cfg.name}_{mode}"
        seconds = train_arm(config, mode, (f"model.resizer.mode={mode}", f"name={name}", *sets), repo)
        run_dir = repo / cfg.output_dir / name  # an absolute output_dir stays itself
        row = arm_result(run_dir, f"mode {mode}")
        rows[mode] = {
            "run_dir": row["run_dir"],
            "backbone_sees": cfg.data.image_size if mode == "none" else cfg.model.resizer.target_size,
            **{k: row[k] for k in ("parameters", "cv_rmse", "fold_rmse", "fold_rmse_mean", "fold_rmse_std",
                                   "best_epochs", "train_seconds")},
            "wall_seconds": seconds,
        }
    # Every mode trains on the same folds file, so they share one constant baseline.
    any_cv = read_cv(rows[modes[0]]["run_dir"])
    return {
        "what": "ablation",
        "config": config,
        "overrides": list(sets),
        "data_dir": cfg.data.dir,
        "synth": {"n_train": n_train, "params": asdict(params)},
        "image_size": cfg.data.image_size,
        "target_size": cfg.model.resizer.target_size,
        "epochs": cfg.train.epochs,
        "detail_survival": survival,
        "constant_baseline_rmse": any_cv.get("constant_baseline_rmse"),
        "detail_blind_rmse": info.get("detail_blind_rmse"),
        "noise_floor_rmse": info.get("noise_floor_rmse"),
        "modes": rows,
        "total_seconds": time.perf_counter() - t_start,
        "machine": machine_description(),
    }


def format_ablation(result: dict) -> str:
    """The markdown table: one row per mode, then the reference scores."""
    rows = result["modes"]
    base = rows.get("bilinear", {}).get("cv_rmse")
    lines = [
        f"{result['synth']['n_train']} synthetic photos (seed {result['synth']['params']['seed']}) loaded at "
        f"{result['image_size']} px, backbone at {result['target_size']} px, {len(next(iter(rows.values()))['fold_rmse'])}"
        f" folds x {result['epochs']} epochs per mode; a plain resize to {result['target_size']} px keeps "
        f"{100 * result['detail_survival']:.1f} % of the stripes' amplitude ({result['machine']})",
        "",
        "| mode | backbone sees | parameters | CV RMSE | folds mean ± std | folds min–max | vs bilinear |"
        " train s (all folds) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in rows.items():
        vs = f"{r['cv_rmse'] / base:.2f}x" if base else "–"
        lines.append(
            f"| {mode} | {r['backbone_sees']} px | {r['parameters']:,} | {r['cv_rmse']:.3f} | "
            f"{r['fold_rmse_mean']:.3f} ± {r['fold_rmse_std']:.3f} | {min(r['fold_rmse']):.3f}–"
            f"{max(r['fold_rmse']):.3f} | {vs} | {r['train_seconds']:.0f} |")
    for label, key in (("constant baseline (each fold predicts its training mean)", "constant_baseline_rmse"),
                       ("detail-blind floor (a perfect model without the stripes)", "detail_blind_rmse"),
                       ("noise floor (a perfect model)", "noise_floor_rmse")):
        if result.get(key) is not None:
            lines.append(f"| {label} | | | {result[key]:.3f} | | | | |")
    lines.append("")
    lines.append(f"total: {result['total_seconds'] / 60:.1f} min")
    return "\n".join(lines)
