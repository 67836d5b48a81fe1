"""Atomic writes: every artefact is written to a temp file in its folder, then renamed over the target,
so a crash or a failed check never leaves a half-written file or destroys the previous one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
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


def named_os_error(exc: OSError, path: str | os.PathLike) -> OSError:
    """The same OSError (same class and errno) naming `path`: a failed write() names no file, or only its
    temp file, and the user must learn which artefact could not be written."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


# HDF5's report of a failed write, which h5py raises as RuntimeError when it fails while closing a file
# (flushing its metadata) rather than inside a write call: "... errno = 28, error message = 'No space left
# on device' ..." (seen with Keras' save_weights on a disk that filled between our check and the write).
_HDF5_WRITE_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")


@contextlib.contextmanager
def write_errors_naming(path: str | os.PathLike):
    """Re-raise a failed write inside the block as an OSError (same errno) naming `path`: an OSError, or the
    OS error that HDF5 reports in a RuntimeError. Any other error passes unchanged."""
    try:
        yield
    except OSError as exc:
        raise named_os_error(exc, path) from exc
    except RuntimeError as exc:
        found = _HDF5_WRITE_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        reported = OSError(code, os.strerror(code) if code in errno.errorcode else found.group(2))
        raise named_os_error(reported, path) from exc


def ensure_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Raise ENOSPC naming `path` when its file system has less than `nbytes` free.

    For writers that cannot fail cleanly on a full disk: h5py (Keras weights) prints hundreds of errors and
    can crash the process when a write fails midway, so the space is checked before it starts.
    """
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("."))
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"No space left on device (needs about {nbytes / 2**20:.1f} MiB, "
                      f"{free / 2**20:.1f} MiB free)", str(path))


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Write `path` by calling `write(temp file)` (e.g. a Keras `save`), then renaming it into place.

    `suffix` ends the temp file's name, for writers that insist on one (`.keras`). On failure the temp file
    is removed, the previous `path` is untouched, and an OSError names `path` (also for a failed write that
    h5py reports as RuntimeError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path).with_suffix(".tmp" + suffix)
    try:
        with write_errors_naming(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write_with(path, write)


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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        with write_errors_naming(out):  # a preset's weights are HDF5 too
            fill(tmp)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
