"""`python -m lresizervit weights fetch|check`: pretrained backbone weights as local folders.

An internet-off Kaggle notebook cannot download weights: they come in as an attached Kaggle Model or
dataset, a folder the config's `model.backbone.name` points at (`keras_hub:/kaggle/input/...`). `fetch`
makes such a folder on a machine with internet (kagglehub downloads the preset, the folder is copied to
`--out` whole or not at all); `check` says before any training whether the config's backbone can be found,
so `train_folds.sh` fails in seconds, not after the folds are written and the first fold's data is read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lresizervit.config import Config
from lresizervit.io_utils import temp_path


def fetch_preset(preset: str, out: str | os.PathLike, force: bool = False) -> Path:
    """Copy keras-hub preset `preset` (a name, a kaggle:// handle or a folder) to the folder `out`."""
    from lresizervit.models.keras_hub_backbone import resolve_preset

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"--out {out}: exists and is not empty; choose another folder or pass --force")
    folder = Path(resolve_preset(preset))
    if folder.resolve() == out.resolve():
        raise ValueError(f"--out {out}: is the preset folder itself")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        shutil.copytree(folder, tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def check_backbone(cfg: Config) -> str:
    """Where the config's backbone comes from, or the error that says what to attach or fetch."""
    name = cfg.model.backbone.name
    from lresizervit.models.backbones import is_savedmodel_spec, resolve_backbone_path
    from lresizervit.models.keras_hub_backbone import is_keras_hub_spec, resolve_preset

    if is_keras_hub_spec(name):
        return f"keras-hub preset at {resolve_preset(name.split(':', 1)[1])}"
    if is_savedmodel_spec(name):
        return f"SavedModel at {resolve_backbone_path(name)}"
    return f"native {name}, trained from scratch (no weights to load)"
