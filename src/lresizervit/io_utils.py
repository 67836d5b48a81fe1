"""Atomic writes: every artefact is written to a temp file in its folder, then renamed over the target,
so a crash or a failed check never leaves a half-written file or destroys the previous one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def temp_path(path: str | os.PathLike) -> Path:
    """A unique hidden temp file beside `path`, for writing it and then `os.replace`-ing it into place.

    Same folder, so os.replace is a rename on one file system; our own name rather than tempfile's, so
    the file gets the usual umask permissions (mkstemp creates it 0600).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: str | os.PathLike, df: pd.DataFrame, **to_csv_kwargs: Any) -> Path:
    to_csv_kwargs.setdefault("index", False)
    to_csv_kwargs.setdefault("lineterminator", "\n")
    return atomic_write_text(path, df.to_csv(**to_csv_kwargs))


def atomic_write_folder(out: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Make the folder `out` whole or not at all: `fill` writes a temporary folder beside it, which then
    replaces `out` (a killed run leaves no half-written folder that a rerun would take as done)."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        fill(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
