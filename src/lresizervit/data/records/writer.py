"""Writing a frame's photos and columns as TFRecord shards plus their manifest (see ``records``).

TensorFlow is imported inside ``write_tfrecords``: the encoding worker processes import this module and
should not pay TF's ~3 s and ~760 MB each.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from lresizervit.data.decode import load_image
from lresizervit.data.records.manifest import FORMAT, FORMAT_VERSION, MANIFEST, SHARD_NAME, SHARD_SUFFIX
from lresizervit.data.records.rows import frame_columns, rows_fingerprint
from lresizervit.io_utils import atomic_write_json, temp_path
from lresizervit.task import FOLD, Task

__all__ = ["MAX_SHARD_BYTES", "write_tfrecords"]

# Shards of 100-200 MB: large sequential reads (GCS on TPU), yet enough files to read several at once and
# shuffle by file. The shard count is ceil(estimated total / this), so each shard is at most about this big
# and, once there are two or more, at least half of it.
MAX_SHARD_BYTES = 200 * 2**20
# Images encoded up front to estimate the total size (< 1 % extra work on the real 9,912 photos).
_SAMPLE_ROWS = 32
# Proto framing + the non-image features of one record, roughly.
_RECORD_OVERHEAD = 200
# Below this many images the start of the worker processes (~1-3 s each, spawned) costs more than it saves.
_MIN_ROWS_FOR_WORKERS = 500


def write_tfrecords(
    folds_df: pd.DataFrame,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int,
    task: Task,
    num_shards: int | None = None,
    quality: int = 95,
    *,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write ``folds_df``'s images (``task.image_path`` under ``data_dir``) and columns as TFRecord shards;
    return the manifest.

    A frame with the task's target column becomes ``train-*`` shards (fold from ``kfold``, or -1 without it); one
    without becomes ``test-*`` shards. ``num_shards=None`` sizes shards to at most ~200 MB.
    Existing shards and manifest in ``out_dir`` are replaced. ``workers`` (default and at most 2) encoding
    processes are used from 500 rows on; they are spawned, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard (``python -m lresizervit`` and notebooks are fine), or ``workers=1``.
    """
    _check_size(image_size)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer JPEG quality in 1..100, got {quality!r}")
    rows = frame_columns(folds_df, task)
    n = len(rows["id"])
    split = "train" if rows["target"] is not None else "test"
    paths = [str(task.image_file(data_dir, split, i)) for i in rows["id"]]
    # Stable: each fold's rows keep the frame's order (see the package docstring).
    order = np.argsort(rows["fold"], kind="stable")
    ordered_paths = [paths[i] for i in order]

    if num_shards is None:
        num_shards = _auto_num_shards(ordered_paths, image_size, int(quality))
    if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    num_shards = min(int(num_shards), n)  # no empty shards
    chunks = np.array_split(order, num_shards)
    names = [f"{split}-{i:05d}-of-{num_shards:05d}{SHARD_SUFFIX}" for i in range(num_shards)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1)

    import tensorflow as tf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # From here until the new manifest lands, readers refuse the directory instead of mixing old and new.
    (out / MANIFEST).unlink(missing_ok=True)
    for p in out.glob(f".*{SHARD_SUFFIX}.*.tmp"):  # shards a killed write left half-written (up to 200 MB each)
        p.unlink()
    encoded = _encode_all(ordered_paths, int(image_size), int(quality), int(workers))
    shards: list[dict[str, Any]] = []
    tmp: Path | None = None
    try:
        for name, chunk in zip(names, chunks, strict=True):
            tmp = temp_path(out / name)
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in chunk:
                    data, height, width = next(encoded)
                    writer.write(_example(tf, rows, int(i), data, height, width))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, out / name)
            tmp = None
            shards.append(
                {
                    "file": name,
                    "count": len(chunk),
                    "bytes": (out / name).stat().st_size,
                    "folds": _counts(rows["fold"][chunk]),
                }
            )
    finally:
        encoded.close()  # stops the worker pool, also on error
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    for p in out.iterdir():  # shards of an earlier write with another shard count or split
        if SHARD_NAME.match(p.name) and p.name not in names:
            p.unlink()

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "split": split,
        "image_size": int(image_size),
        "quality": int(quality),
        "chroma_subsampling": "4:4:4",
        "columns": {
            "id": task.id_column,
            "metadata": list(task.metadata_columns),
            "target": task.target_column if rows["target"] is not None else None,
            "fold": FOLD if rows["has_fold"] else None,
        },
        "total": n,
        "folds": _counts(rows["fold"]),
        "shards": shards,
        "source": {
            "image_dir": str(task.image_file(data_dir, split, "x").parent.resolve()),
            "rows": n,
            "rows_sha256": rows_fingerprint(folds_df, task),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _example(tf: Any, rows: Mapping[str, Any], i: int, data: bytes, height: int, width: int) -> bytes:
    f = tf.train
    feature = {
        "image": f.Feature(bytes_list=f.BytesList(value=[data])),
        "metadata": f.Feature(float_list=f.FloatList(value=rows["metadata"][i].tolist())),
        "id": f.Feature(bytes_list=f.BytesList(value=[rows["id"][i].encode("utf-8")])),
        "fold": f.Feature(int64_list=f.Int64List(value=[int(rows["fold"][i])])),
        "height": f.Feature(int64_list=f.Int64List(value=[height])),
        "width": f.Feature(int64_list=f.Int64List(value=[width])),
    }
    if rows["target"] is not None:
        feature["target"] = f.Feature(float_list=f.FloatList(value=[float(rows["target"][i])]))
    return f.Example(features=f.Features(feature=feature)).SerializeToString()


def _encode_image(path: str, image_size: int, quality: int) -> tuple[bytes, int, int]:
    """``load_image`` then JPEG: (bytes, height, width)."""
    rgb = load_image(path, image_size)
    buf = io.BytesIO()
    # subsampling=0 (4:4:4): PIL's default 4:2:0 halves the colour resolution, and fine detail is what the
    # learned resizer is there to see.
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue(), int(rgb.shape[0]), int(rgb.shape[1])


def _encode_task(task: tuple[str, int, int]) -> tuple[bytes, int, int]:
    return _encode_image(*task)


def _encode_all(
    paths: list[str], image_size: int, quality: int, workers: int
) -> Iterator[tuple[bytes, int, int]]:
    """Encoded images in the order of ``paths``; a generator, so closing it stops the workers."""
    tasks = [(p, image_size, quality) for p in paths]
    if workers <= 1 or len(tasks) < _MIN_ROWS_FOR_WORKERS:
        yield from map(_encode_task, tasks)
        return
    # spawn, not fork: the parent has usually started TensorFlow's threads, and forking those can deadlock.
    with multiprocessing.get_context("spawn").Pool(min(workers, 2)) as pool:
        yield from pool.imap(_encode_task, tasks, chunksize=16)


def _auto_num_shards(paths: list[str], image_size: int, quality: int) -> int:
    n = len(paths)
    sample = np.unique(np.linspace(0, n - 1, min(n, _SAMPLE_ROWS)).round().astype(int))
    mean_bytes = float(np.mean([len(_encode_image(paths[i], image_size, quality)[0]) for i in sample]))
    return max(1, math.ceil(n * (mean_bytes + _RECORD_OVERHEAD) / MAX_SHARD_BYTES))


def _counts(folds: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(folds, return_counts=True)
    # JSON object keys are strings; readers turn them back into ints.
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def _check_size(size: int) -> None:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {size!r}")
