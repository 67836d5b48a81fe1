"""A TFRecord directory's manifest: its format, where it lives, and the checks every reader runs first.

``manifest.json`` is written last, so a directory without it is half-written. Directories may be local
paths or ``gs://...`` (TPU). TensorFlow is imported inside the functions: the writer's encoding worker
processes import this module and should not pay TF's ~3 s and ~760 MB each.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from lresizervit.data.records.rows import rows_fingerprint
from lresizervit.task import Task

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "SHARD_NAME",
    "SHARD_SUFFIX",
    "TFRecordsError",
    "check_matches_frame",
    "default_tfrecords_dir",
    "join_path",
    "read_manifest",
    "records_per_fold",
]

MANIFEST = "manifest.json"
FORMAT = "lresizervit-tfrecords"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".tfrec"
SHARD_NAME = re.compile(r"^(train|test)-\d{5}-of-\d{5}" + re.escape(SHARD_SUFFIX) + r"$")


def default_tfrecords_dir(data_dir: str | os.PathLike[str], image_size: int) -> Path:
    """``<data_dir>/tfrecords_<image_size>``: holds ``train/`` and ``test/``, one split (and manifest) each."""
    return Path(data_dir) / f"tfrecords_{int(image_size)}"


class TFRecordsError(ValueError):
    """A TFRecord directory is missing, half-written or not what the caller expects; the message names it."""


def join_path(d: str, name: str) -> str:
    """``d/name`` for a local directory or a ``scheme://`` URL."""
    # os.path / pathlib would turn "gs://bucket" into "gs:/bucket".
    return f"{d.rstrip('/')}/{name}" if "://" in d else os.path.join(d, name)


class _FileSystem:
    """What read_manifest needs of a file system: TensorFlow's gfile for a URL (``gs://``, where a TPU's
    records live), `os` for a local path, which spares `tfrecords --if-missing` and `train`'s check before
    Keras starts the ~6 s TensorFlow import."""

    def __init__(self, d: str):
        self.gfile = None
        if "://" in d:
            import tensorflow as tf

            self.gfile = tf.io.gfile

    def isdir(self, path: str) -> bool:
        return self.gfile.isdir(path) if self.gfile else os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return self.gfile.exists(path) if self.gfile else os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return self.gfile.listdir(path) if self.gfile else os.listdir(path)

    def size(self, path: str) -> int:
        return self.gfile.stat(path).length if self.gfile else os.path.getsize(path)

    def read_bytes(self, path: str) -> bytes:
        if self.gfile:
            with self.gfile.GFile(path, "rb") as fh:
                return fh.read()
        with open(path, "rb") as fh:
            return fh.read()


def read_manifest(tfrec_dir: str | os.PathLike[str], image_size: int | None = None) -> dict[str, Any]:
    """The checked manifest of ``tfrec_dir`` (a local path or ``gs://...``): complete, ours, of ``image_size``.

    Every listed shard must exist with the byte size the manifest recorded, so a half-written or since
    overwritten directory fails here, naming the directory, rather than mid-epoch.
    """
    d = os.fspath(tfrec_dir)
    fs = _FileSystem(d)
    if not fs.isdir(d):
        raise TFRecordsError(f"{d}: no such TFRecord directory (write it with write_tfrecords)")
    path = join_path(d, MANIFEST)
    if not fs.exists(path):
        shards = [name for name in fs.listdir(d) if name.endswith(SHARD_SUFFIX)]
        if shards:
            raise TFRecordsError(
                f"{d}: {len(shards)} shard file(s) but no {MANIFEST}: half-written (an interrupted write?) "
                "or not written by write_tfrecords; write it again"
            )
        raise TFRecordsError(f"{d}: holds no TFRecords (no {MANIFEST}); write them with write_tfrecords")
    try:
        manifest = json.loads(fs.read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise TFRecordsError(f"{d}: {MANIFEST} is not valid JSON: {exc}") from exc
    _check_manifest(d, manifest)
    if image_size is not None and manifest["image_size"] != image_size:
        raise TFRecordsError(
            f"{d}: holds images with a shorter side of {manifest['image_size']} px, but image_size "
            f"{image_size} was asked for; write records at {image_size} px (another directory) or change "
            "image_size"
        )
    for shard in manifest["shards"]:
        shard_path = join_path(d, shard["file"])
        if not fs.exists(shard_path):
            raise TFRecordsError(f"{d}: shard {shard['file']} is listed in {MANIFEST} but missing")
        size = fs.size(shard_path)
        if size != shard["bytes"]:
            raise TFRecordsError(
                f"{d}: shard {shard['file']} has {size} bytes, {MANIFEST} says {shard['bytes']}: it changed "
                "after the manifest was written; write the directory again"
            )
    return manifest


def records_per_fold(tfrec_dir: str | os.PathLike[str]) -> dict[int, int]:
    """Number of records of each fold (-1: rows without a fold, e.g. the test set), from the manifest only."""
    manifest = read_manifest(tfrec_dir)
    return {int(k): int(v) for k, v in sorted(manifest["folds"].items(), key=lambda kv: int(kv[0]))}


def check_matches_frame(
    tfrec_dir: str | os.PathLike[str], df: pd.DataFrame, image_size: int | None, task: Task
) -> dict[str, Any]:
    """Refuse records written for another task or from other rows than ``df`` (ids, metadata, targets or
    folds differ).

    Records written from an older folds file would validate each fold on rows the model trained on.
    Returns the manifest.
    """
    manifest = read_manifest(tfrec_dir, image_size)
    cols = manifest["columns"]
    if cols["id"] != task.id_column or cols["metadata"] != list(task.metadata_columns):
        raise TFRecordsError(
            f"{os.fspath(tfrec_dir)}: written for the id column {cols['id']!r} and the metadata columns "
            f"{cols['metadata']}, but the config's task has {task.id_column!r} and "
            f"{list(task.metadata_columns)}; write the records again with this config"
        )
    if manifest["source"]["rows_sha256"] != rows_fingerprint(df, task):
        raise TFRecordsError(
            f"{os.fspath(tfrec_dir)}: written from other rows ({manifest['source']['rows']} rows of "
            f"{manifest['source']['image_dir']}) than this frame ({len(df)} rows): its Ids, metadata, targets "
            "or folds differ; write the records again from this frame"
        )
    return manifest


def _check_manifest(d: str, m: Any) -> None:
    """Shape and meaning of a parsed manifest; anything else is a TFRecordsError naming the directory."""

    def bad(what: str) -> TFRecordsError:
        return TFRecordsError(f"{d}: {MANIFEST} {what}; write the directory again with write_tfrecords")

    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise bad(f"is not a {FORMAT} manifest")
    if m.get("version") != FORMAT_VERSION:
        raise bad(f"has format version {m.get('version')!r}; this code reads version {FORMAT_VERSION}")
    missing = [
        k for k in ("split", "image_size", "columns", "total", "folds", "shards", "source") if k not in m
    ]
    if missing:
        raise bad(f"lacks the key(s) {missing}")
    try:
        if not isinstance(m["columns"]["metadata"], list):
            raise bad(f"lists no metadata columns ({m['columns']['metadata']!r})")
        if not isinstance(m["image_size"], int) or not m["shards"] or "rows_sha256" not in m["source"]:
            raise bad("has no image_size, no shards or no source fingerprint")
        total = sum(int(s["count"]) for s in m["shards"])
        fold_total = sum(int(v) for v in m["folds"].values())
        per_shard = sum(int(v) for s in m["shards"] for v in s["folds"].values())
        if not total == fold_total == per_shard == int(m["total"]):
            raise bad(f"is inconsistent: total {m['total']}, shard counts sum to {total}")
        for s in m["shards"]:
            if not SHARD_NAME.match(str(s["file"])) or not isinstance(s["bytes"], int):
                raise bad(f"lists a shard with an unexpected name or size: {s}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, TFRecordsError):
            raise
        raise bad(f"is malformed ({type(exc).__name__}: {exc})") from exc
