"""A synthetic data set in exactly the competition's layout, with a signal a small model can find.

Each photo shows one "pet" (an ellipse) near the middle of a textured background. Its Pawpularity is
    38 + w_size * z(size of the pet) + w_detail * z(contrast of a fine stripe texture on the pet)
       + a small metadata effect + Gaussian noise (std `noise_std`), rounded and clipped to 1..100.
The stripes have a period of `detail_period` times the photo's shorter side (3 px when the photo is
loaded at 96 px, as in the demo), so an antialiased resize to a quarter of that size averages them away while keeping the
pet's mean colour: only a model that looks at the full resolution, nonlinearly, can read their contrast.
That is the situation the learned resizer is for. `generator.json` records the seed, the noise-floor RMSE
(targets vs the noise-free signal), the detail-blind RMSE (the best a model can score that sees everything
but the stripes, e.g. after a plain resize that averaged them away) and the constant-baseline RMSE
(targets vs their mean), so a CV score can be judged against all three.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lresizervit.io_utils import atomic_write_bytes, atomic_write_csv, atomic_write_json
from lresizervit.task import PAWPULARITY, PAWPULARITY_METADATA, Task

META_COLUMNS = PAWPULARITY_METADATA

# Fraction of 1s per metadata column, roughly as in the real train.csv.
META_RATES = (0.03, 0.77, 0.90, 0.86, 0.01, 0.07, 0.13, 0.05, 0.17, 0.17, 0.06, 0.07)
# Small metadata effect (Pawpularity points), a few columns only: the host says metadata adds little.
META_EFFECT = {"Group": 3.0, "Human": 2.0, "Blur": -4.0, "Info": -2.0}


@dataclass(frozen=True)
class SynthParams:
    seed: int = 0
    # Shorter side of the photos, in pixels (uniform); the longer side follows from the aspect ratio.
    min_side: int = 256
    max_side: int = 768
    max_long_side: int = 1024
    # Stripe period as a fraction of the photo's shorter side.
    detail_period: float = 0.03125
    # Pawpularity points per standard deviation of each latent factor.
    w_size: float = 12.0
    w_detail: float = 13.0
    noise_std: float = 6.0
    # The pet's colour is 127.5 ± this, per channel.
    pet_colour_spread: float = 25.0
    jpeg_quality: int = 92


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "size": rng.uniform(0.0, 1.0, n),
        "detail": rng.uniform(0.0, 1.0, n),
        "noise": rng.standard_normal(n),
        "meta": (rng.uniform(size=(n, len(META_COLUMNS))) < np.asarray(META_RATES)).astype(np.int64),
        "image_seed": rng.integers(0, 2**63 - 1, n),
        "ids": np.array([rng.bytes(16).hex() for _ in range(n)]),
    }


def _signal(lat: dict[str, np.ndarray], p: SynthParams, meta_columns=META_COLUMNS) -> np.ndarray:
    """The noise-free Pawpularity (before rounding and clipping); only the metadata a data set shows has an
    effect, so the noise floor stays what a perfect model of the visible inputs scores."""
    z = np.sqrt(12.0)  # a uniform(0, 1) variable has std 1/sqrt(12)
    y = 38.0 + p.w_size * (lat["size"] - 0.5) * z + p.w_detail * (lat["detail"] - 0.5) * z
    for col, eff in META_EFFECT.items():
        if col in meta_columns:
            y = y + eff * lat["meta"][:, META_COLUMNS.index(col)]
    return y


def _metadata(lat: dict[str, np.ndarray], task: Task, seed: int) -> pd.DataFrame:
    """The task's metadata columns: Pawpularity's own names carry their simulated values; any other column
    is a 0/1 draw with no effect (binary tasks) or, for non-binary ones, a noisy reading of the pet's size in
    percent (a real number that helps, as a tabular feature of another data set would)."""
    columns = {}
    for i, col in enumerate(task.metadata_columns):
        if col in META_COLUMNS:
            columns[col] = lat["meta"][:, META_COLUMNS.index(col)]
            continue
        rng = np.random.default_rng([seed, i])
        n = len(lat["size"])
        if task.metadata_binary:
            columns[col] = (rng.uniform(size=n) < 0.3).astype(np.int64)
        else:
            columns[col] = np.round(100.0 * lat["size"] + rng.normal(0.0, 10.0, n), 2)
    return pd.DataFrame(columns, index=range(len(lat["size"])))


def _detail_term(lat: dict[str, np.ndarray], p: SynthParams) -> np.ndarray:
    """The part of the signal that only the fine stripes carry (zero mean over the data set)."""
    return p.w_detail * (lat["detail"] - 0.5) * np.sqrt(12.0)


def render_image(size: float, detail: float, image_seed: int, p: SynthParams) -> bytes:
    """One JPEG: background texture + an ellipse whose area encodes `size` and stripe contrast `detail`."""
    rng = np.random.default_rng(int(image_seed))
    short = int(rng.integers(p.min_side, p.max_side + 1))
    aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(1.5))))
    long = int(min(p.max_long_side, round(short * aspect)))
    h, w = (short, long) if rng.uniform() < 0.5 else (long, short)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Background: a smooth colour gradient plus mild pixel noise, different for every photo.
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w) + 1.0) / 2.0
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    img += rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)

    # The pet: radius from 12% to 38% of the shorter side, centred in the middle 30% so a centre crop keeps it.
    radius = short * (0.12 + 0.26 * size)
    cy = h / 2 + rng.uniform(-0.15, 0.15) * short
    cx = w / 2 + rng.uniform(-0.15, 0.15) * short
    ecc = rng.uniform(0.75, 1.25)
    rot = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    inside = (u / (radius * ecc)) ** 2 + (v / (radius / ecc)) ** 2 <= 1.0

    colour = 127.5 + rng.uniform(-p.pet_colour_spread, p.pet_colour_spread, 3)
    period = max(2.0, p.detail_period * short)
    theta = rng.uniform(0, np.pi)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
    # Zero-mean stripes: the pet's average colour does not depend on `detail`, only its fine contrast does.
    stripes = (55.0 * detail) * np.sin(phase + rng.uniform(0, 2 * np.pi))
    pet = colour[None, None, :] + stripes[..., None]
    img = np.where(inside[..., None], pet, img)
    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    buf = io.BytesIO()
    # 4:4:4 chroma keeps the stripes sharp in colour too; the default 4:2:0 would halve their resolution.
    Image.fromarray(arr).save(buf, format="JPEG", quality=p.jpeg_quality, subsampling=0)
    return buf.getvalue()


def _render_to(args: tuple) -> None:
    path, size, detail, image_seed, params = args
    atomic_write_bytes(path, render_image(size, detail, image_seed, params))


def generate(
    out_dir: str | os.PathLike,
    n_train: int,
    n_test: int,
    params: SynthParams | None = None,
    workers: int | None = None,
    task: Task = PAWPULARITY,
) -> dict:
    """Write train.csv, test.csv, sample_submission.csv, the images and generator.json, in `task`'s layout
    (columns, image paths, target range; Pawpularity's by default).

    Deterministic for `params.seed`. `test_labels.csv` holds the hidden test targets so the demo can
    score its submission the way the leaderboard would; the competition data has no such file. The target
    is the Pawpularity-like 1..100 signal mapped linearly onto `task.target_range` (rounded for integer
    targets), so every RMSE in generator.json is in the task's units.
    """
    p = params or SynthParams()
    if n_train < 2 or n_test < 1:
        raise ValueError(f"need at least 2 train and 1 test images, got --train {n_train} --test {n_test}")
    if not 0 < p.min_side <= p.max_side <= p.max_long_side:
        raise ValueError(f"need 0 < min_side <= max_side <= max_long_side, got {p}")
    out = Path(out_dir)
    rng = np.random.default_rng(p.seed)
    n = n_train + n_test
    lat = _latents(rng, n)
    ID, TARGET = task.id_column, task.target_column

    def to_task(y):  # 1..100 onto the task's range: the identity for Pawpularity
        return task.lo + (np.asarray(y, np.float64) - 1.0) * (task.hi - task.lo) / 99.0

    signal = _signal(lat, p, task.metadata_columns)
    noisy = np.clip(to_task(signal + p.noise_std * lat["noise"]), task.lo, task.hi)
    target = np.rint(noisy).astype(np.int64) if task.integer_target else np.round(noisy, 4)

    frame = _metadata(lat, task, p.seed)
    frame.insert(0, ID, lat["ids"])
    train = frame.iloc[:n_train].copy()
    train[TARGET] = target[:n_train]
    test = frame.iloc[n_train:].reset_index(drop=True)

    jobs = []
    for split, lo, hi in (("train", 0, n_train), ("test", n_train, n)):
        for i in range(lo, hi):
            path = task.image_file(out, split, lat["ids"][i])
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((path, float(lat["size"][i]), float(lat["detail"][i]), int(lat["image_seed"][i]), p))
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 16:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_to, jobs, chunksize=16))
    else:
        for job in jobs:
            _render_to(job)

    atomic_write_csv(out / "train.csv", train)
    atomic_write_csv(out / "test.csv", test)
    atomic_write_csv(out / "sample_submission.csv", pd.DataFrame({ID: test[ID], TARGET: float(to_task(38.0))}))
    atomic_write_csv(out / "test_labels.csv", pd.DataFrame({ID: test[ID], TARGET: target[n_train:]}))

    y = target[:n_train].astype(np.float64)
    clipped_signal = np.clip(to_task(signal[:n_train]), task.lo, task.hi)
    info = {
        "generator": "lresizervit.data.synth",
        "params": asdict(p),
        "task": asdict(task),
        "n_train": n_train,
        "n_test": n_test,
        "target_mean": float(y.mean()),
        "target_std": float(y.std()),
        # What a perfect model of the image + metadata signal would score: the irreducible error.
        "noise_floor_rmse": float(np.sqrt(np.mean((y - clipped_signal) ** 2))),
        # What a perfect model that cannot see the stripes scores (it knows size and metadata; the stripes'
        # term has mean 0): the floor of a model whose input was resized until they vanished.
        "detail_blind_rmse": float(np.sqrt(np.mean(
            (y - np.clip(to_task(signal[:n_train] - _detail_term(lat, p)[:n_train]), task.lo, task.hi)) ** 2))),
        # What predicting the train mean for every row scores.
        "constant_baseline_rmse": float(np.sqrt(np.mean((y - y.mean()) ** 2))),
    }
    atomic_write_json(out / "generator.json", info)
    return info

