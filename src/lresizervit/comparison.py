"""A training comparison on the synthetic data set, as `ablation` and `transfer` run one.

Each arm of a comparison is the same experiment config with its own `--set` overrides, trained by the
repository's own `train_folds.sh` in a subprocess (one process per fold, resumable: complete folds are
skipped on a rerun) and read back from its `cv.json` and folds' `metrics.json`. The synthetic data set is
generated once and never silently mixed with another; `detail_survival` measures how much of its stripes
(the part of the target only the full resolution shows) a plain resize leaves.
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

from lresizervit.data.decode import load_image
from lresizervit.data.synth import SynthParams, generate, render_image
from lresizervit.run import CV_FILE, read_cv, read_metrics


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


def train_arm(config: str, label: str, sets: tuple[str, ...], repo: Path, folds: tuple[int, ...] = ()) -> float:
    """Train the folds (default: every fold) of one arm with train_folds.sh; returns its wall seconds."""
    script = repo / "train_folds.sh"
    if not script.is_file():
        raise FileNotFoundError(f"{script}: the comparison trains with the repository's train_folds.sh; "
                                f"run it from the repository root")
    args = ["bash", str(script), config, *(str(k) for k in folds)]
    for s in sets:
        args += ["--set", s]
    print(f"== {label}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, cwd=repo, env={**os.environ, "PYTHON": sys.executable})
    return time.perf_counter() - t0


def arm_result(run_dir: Path, label: str) -> dict:
    """One trained arm's CV and per-fold figures, from its cv.json and the folds' metrics.json."""
    cv = read_cv(run_dir)
    if cv is None:
        raise ValueError(f"{run_dir / CV_FILE}: missing after training {label!r}; see the training output above")
    metrics = [read_metrics(run_dir, k) for k in range(cv["n_folds"])]
    return {
        "run_dir": str(run_dir),
        "parameters": metrics[0]["parameters"],
        "cv_rmse": cv["cv_rmse"],
        "fold_rmse": cv["fold_rmse"],
        "fold_rmse_mean": cv["fold_rmse_mean"],
        "fold_rmse_std": cv["fold_rmse_std"],
        "constant_baseline_rmse": cv.get("constant_baseline_rmse"),
        "noise_floor_rmse": cv.get("noise_floor_rmse"),
        "best_epochs": [m["best_epoch"] for m in metrics],
        "train_seconds": sum(m["seconds"] for m in metrics),
    }


def detail_survival(image_size: int, target_size: int, params: SynthParams | None = None, n: int = 12,
                    resizer=None) -> float:
    """The fraction of the stripes' amplitude left after loading a photo at `image_size` (as the loader
    does) and resizing it to `target_size` with the model's plain antialiased bilinear resize, or with
    `resizer` (a trained model's resizer layer, which takes pixels in [-1, 1]).

    Renders each photo twice, with the strongest stripes and with none (same photo otherwise), and
    returns the median ratio of the RMS difference at `target_size` to that at `image_size`: about 1 when
    the resize keeps the stripes, about 0 when it averages them away, above 1 when a resizer amplifies them.
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
            if resizer is None:
                small = np.asarray(resize_images(np.stack(views), (target_size, target_size), "bilinear"))
            else:  # back in pixel units, so the ratio compares like with like
                small = np.asarray(resizer(np.stack(views) / 127.5 - 1.0)) * 127.5
                if small.shape[1:3] != (target_size, target_size):
                    raise ValueError(f"the resizer gives {small.shape[1]}x{small.shape[2]} images, not "
                                     f"{target_size}x{target_size}")
            ratios.append(float(np.sqrt(np.mean((small[1] - small[0]) ** 2) / np.mean(full ** 2))))
    return float(np.median(ratios))
