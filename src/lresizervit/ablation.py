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

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lresizervit.bench.machine import machine_description
from lresizervit.config import Config
from lresizervit.data.decode import load_image
from lresizervit.data.synth import SynthParams, generate, render_image
from lresizervit.run import CV_FILE, read_cv, read_metrics

MODES = ("learned", "conv_after_resize", "bilinear")
ALL_MODES = (*MODES, "none")


def ensure_synth_data(data_dir: Path, n_train: int, n_test: int, params: SynthParams) -> dict:
    """Generate the data set unless `data_dir` already holds exactly this one; refuse to mix two."""
    gen = data_dir / "generator.json"
    if gen.is_file():
        info = json.loads(gen.read_text())
        if info.get("params") == asdict(params) and info.get("n_train") == n_train and info.get("n_test") == n_test:
            return info
        raise ValueError(f"{data_dir} holds a data set generated with other settings (see {gen}); "
                         f"delete it or set data.dir to another folder")
    return generate(data_dir, n_train, n_test, params)


def _train_mode(config: str, mode: str, name: str, sets: tuple[str, ...], repo: Path) -> float:
    """Train every fold of one mode with train_folds.sh; returns its wall seconds."""
    script = repo / "train_folds.sh"
    if not script.is_file():
        raise FileNotFoundError(f"{script}: the ablation trains with the repository's train_folds.sh; "
                                f"run it from the repository root")
    args = ["bash", str(script), config, "--set", f"model.resizer.mode={mode}", "--set", f"name={name}"]
    for s in sets:
        args += ["--set", s]
    print(f"== {mode}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, cwd=repo, env={**os.environ, "PYTHON": sys.executable})
    return time.perf_counter() - t0


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
        seconds = _train_mode(config, mode, name, sets, repo)
        run_dir = repo / cfg.output_dir / name  # an absolute output_dir stays itself
        cv = read_cv(run_dir)
        if cv is None:
            raise ValueError(f"{run_dir / CV_FILE}: missing after training mode {mode!r}; see the training output "
                             "above")
        metrics = [read_metrics(run_dir, k) for k in range(cv["n_folds"])]
        rows[mode] = {
            "run_dir": str(run_dir),
            "backbone_sees": cfg.data.image_size if mode == "none" else cfg.model.resizer.target_size,
            "parameters": metrics[0]["parameters"],
            "cv_rmse": cv["cv_rmse"],
            "fold_rmse": cv["fold_rmse"],
            "fold_rmse_mean": cv["fold_rmse_mean"],
            "fold_rmse_std": cv["fold_rmse_std"],
            "best_epochs": [m["best_epoch"] for m in metrics],
            "train_seconds": sum(m["seconds"] for m in metrics),
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


def detail_survival(image_size: int, target_size: int, params: SynthParams | None = None, n: int = 12) -> float:
    """The fraction of the stripes' amplitude left after loading a photo at `image_size` (as the loader
    does) and resizing it to `target_size` with the model's plain antialiased bilinear resize.

    Renders each photo twice, with the strongest stripes and with none (same photo otherwise), and
    returns the median ratio of the RMS difference at `target_size` to that at `image_size`: about 1 when
    the resize keeps the stripes, about 0 when it averages them away.
    """

    from lresizervit.models.resizer import resize_images

    if not 0 < target_size <= image_size:
        raise ValueError(f"need 0 < target_size <= image_size, got {target_size} and {image_size}")
    p = params or SynthParams()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n):
            views = []
            for detail in (0.0, 1.0):
                path = Path(tmp) / f"{k}_{detail}.jpg"
                path.write_bytes(render_image(0.5, detail, p.seed * 1000 + k, p))
                img = load_image(path, image_size).astype(np.float32)
                top, left = (img.shape[0] - image_size) // 2, (img.shape[1] - image_size) // 2
                views.append(img[top:top + image_size, left:left + image_size])
            full = views[1] - views[0]
            small = np.asarray(resize_images(np.stack(views), (target_size, target_size), "bilinear"))
            ratios.append(float(np.sqrt(np.mean((small[1] - small[0]) ** 2) / np.mean(full ** 2))))
    return float(np.median(ratios))
