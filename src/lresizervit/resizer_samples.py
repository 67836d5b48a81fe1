"""What fold 0's learned resizer makes of a few validation photos, saved by the trainer for the report.

The trainer has the fold's best model in memory when it finishes fold 0: it runs the resizer on
`RESIZER_IMAGES` validation photos there and saves the arrays as `fold_0/resizer_samples.npz`, so that
`lresizervit report` draws the figure without importing TensorFlow or loading a model (that cost the report
~10 s of every `train_folds.sh` run). An experiment trained before this file existed has none: the report then
computes the same arrays from the fold-0 model file (`compute_samples`).
"""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.config import Config
from lresizervit.io_utils import atomic_write_bytes
from lresizervit.run import SAMPLES_FILE
from lresizervit.task import FOLD

RESIZER_IMAGES = 4
# image (uint8, as the validation pipeline feeds the model), plain and learned (its resizer's output, float16:
# a figure's precision at a quarter of float64's size), the target per photo, and the plain resize's name.
_ARRAYS = ("image", "plain", "learned", "target", "interpolation")


def pick_validation_images(cfg: Config, n_images: int) -> tuple[pd.DataFrame, str | None]:
    """Fold-0 validation rows spread over the target range, or (empty, why not)."""
    from lresizervit.data.folds import read_folds

    folds_csv = Path(cfg.data.folds_csv)
    if not folds_csv.is_file():
        return pd.DataFrame(), f"the folds file {folds_csv} is missing"
    task = cfg.task
    folds_df, _ = read_folds(folds_csv, task)
    val = folds_df[folds_df[FOLD] == 0].sort_values([task.target_column, task.id_column]).reset_index(drop=True)
    # Evenly spaced ranks: low, middle and high scores, not four look-alikes.
    take = np.unique(np.linspace(0, len(val) - 1, min(n_images, len(val))).round().astype(int))
    val = val.iloc[take].reset_index(drop=True)
    paths = [task.image_file(cfg.data.dir, "train", i) for i in val[task.id_column]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return pd.DataFrame(), f"the train image {missing[0]} is missing (data.dir is {cfg.data.dir})"
    return val, None


def compute_samples(cfg: Config, model, n_images: int = RESIZER_IMAGES,
                    name: str = "the model") -> tuple[dict | None, str]:
    """({array name: array}, "") from `model`'s layer named 'resizer', or (None, why not); `name` names the
    model in that reason."""
    import keras

    from lresizervit.data.augment import apply_transform, eval_transform
    from lresizervit.data.decode import load_image
    from lresizervit.models.resizer import LearnableResizer, resize_images

    try:
        layer = model.get_layer("resizer")
    except ValueError:
        return None, f"{name} has no layer named 'resizer'"
    if not isinstance(layer, LearnableResizer):
        return None, f"the 'resizer' layer of {name} is a {type(layer).__name__}, not a learned resizer"
    val, why = pick_validation_images(cfg, n_images)
    if why:
        return None, why
    task, size = cfg.task, cfg.data.image_size
    transform = eval_transform(size)
    # Exactly what the validation pipeline feeds the model: decode to short side S, centre crop S x S.
    images = np.stack([
        apply_transform(transform, load_image(task.image_file(cfg.data.dir, "train", i), size), short_side=size)
        for i in val[task.id_column]
    ])
    # The model's own scaling (Rescaling(1/127.5, offset=-1)), then its resizer in inference mode.
    x = images.astype("float32") / 127.5 - 1.0
    learned = keras.ops.convert_to_numpy(layer(x, training=False))
    plain = keras.ops.convert_to_numpy(resize_images(x, layer.target_size, layer.interpolation))
    return {"image": images.astype(np.uint8), "plain": np.asarray(plain, np.float16),
            "learned": np.asarray(learned, np.float16), "target": val[task.target_column].to_numpy(np.float64),
            "interpolation": np.array(layer.interpolation)}, ""


def write_samples(cfg: Config, model, fold_dir: Path) -> str:
    """`fold_dir/SAMPLES_FILE` (atomically) from `model`; returns "" or why nothing was written."""
    (fold_dir / SAMPLES_FILE).unlink(missing_ok=True)  # one from an earlier model would describe another
    samples, why = compute_samples(cfg, model)
    if samples is not None:
        buf = BytesIO()
        np.savez_compressed(buf, **samples)
        atomic_write_bytes(fold_dir / SAMPLES_FILE, buf.getvalue())
    return why


def read_samples(path: Path) -> dict:
    """The arrays of a samples file, checked: a damaged one is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            samples = {name: npz[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a resizer samples file ({exc}); delete it and run `report` again") from exc
    n = len(samples["image"])
    shapes_ok = (samples["image"].ndim == 4 and samples["learned"].ndim == 4
                 and samples["plain"].shape == samples["learned"].shape
                 and all(len(samples[k]) == n for k in ("plain", "learned", "target")))
    if not shapes_ok or n == 0:
        raise ValueError(f"{path}: its arrays do not fit together ({ {k: v.shape for k, v in samples.items()} }); "
                         "delete it and run `report` again")
    samples["interpolation"] = str(samples["interpolation"])
    return samples
