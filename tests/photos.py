"""Photo-like test images (a smooth colour field, a few solid ellipses, sensor noise) written as real files,
and copies of them as a user's data set would hold them: re-encoded, resized."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from tests.facts import ID, META_COLUMNS, TARGET


def photo(seed: int, width: int, height: int) -> np.ndarray:
    """An RGB uint8 image with the contrast and structure of a photo, different for every seed."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    image = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def resized(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    return np.array(Image.fromarray(image).resize((round(w * factor), round(h * factor)), Image.BICUBIC))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_data_set(root: Path, n_train: int = 8, n_test: int = 3, side: int = 96) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tiny competition-shaped folder of real JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        df = pd.DataFrame({ID: [f"{split}{i:03d}" for i in range(n)]})
        for col in META_COLUMNS:
            df[col] = np.arange(n) % 2
        if split == "train":
            df[TARGET] = 1 + np.arange(n) * 7 % 100
        df.to_csv(root / f"{split}.csv", index=False)
        for k, image_id in enumerate(df[ID]):
            seed = k if split == "train" else 1000 + k
            write(root / split / f"{image_id}.jpg", encode(photo(seed, side + k, side), quality=90))
        frames[split] = df
    return frames["train"], frames["test"]
