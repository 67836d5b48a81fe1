"""TFRecord shards of pre-resized JPEGs: the input format for TPUs, and a faster loader on any machine.

Why: decoding a 400-1280 px photo is the loose-file loader's main cost. Each record here holds the photo
already resized by ``decode.load_image`` (shorter side == ``image_size``, aspect kept, NOT cropped, so the
train-time random crop still sees the whole photo) and re-encoded as a 4:4:4 JPEG, so reading it costs one
small decode. TPU hosts cannot run ``tf.numpy_function`` (the albumentations path), hence ``pure_tf=True``.

One split per directory::

    train-00000-of-00002.tfrec, train-00001-of-00002.tfrec   (test-... when the frame has no target)
    manifest.json   written last: a directory without it is half-written and every reader refuses it

Record features: ``image`` (JPEG bytes), ``metadata`` (12 float32 in ``META_COLUMNS`` order), ``target``
(float32; absent for test), ``id`` (bytes), ``fold`` (int64; -1 for test), ``height`` / ``width`` (int64).

Row order: rows are stored sorted by fold (stably), so an unshuffled read returns the folds in ascending order
and each fold's rows in the frame's order (an eval dataset of fold k lines up with ``df[df.kfold == k]``); the
manifest's per-shard fold counts let a reader skip shards that hold none of the folds it wants.

TensorFlow (and albumentations) are imported inside the functions that use them: the encoding worker
processes import this module and should not pay TF's ~3 s and ~760 MB each.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from lresizervit.data.decode import load_image
from lresizervit.data.schema import FOLD, ID, META_COLUMNS, TARGET, image_path
from lresizervit.io_utils import atomic_write_json, temp_path

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "MANIFEST",
    "TFRecordsError",
    "check_matches_frame",
    "default_tfrecords_dir",
    "make_tfrecord_dataset",
    "read_manifest",
    "read_tfrecords",
    "records_per_fold",
    "rows_fingerprint",
    "tf_eval_crop",
    "tf_train_augment",
    "write_tfrecords",
]

MANIFEST = "manifest.json"
FORMAT = "lresizervit-tfrecords"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".tfrec"
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
_SHARD_NAME = re.compile(r"^(train|test)-\d{5}-of-\d{5}" + re.escape(SHARD_SUFFIX) + r"$")
# Records (JPEG bytes, ~100-150 KB each at 512 px) held by the training shuffle buffer: a full-set buffer
# would hold the whole data set in memory.
DEFAULT_SHUFFLE_BUFFER = 2048
# libjpeg's accurate integer IDCT, the one PIL uses: TF's default (fast IDCT) differs by a few levels.
_DCT_METHOD = "INTEGER_ACCURATE"


def default_tfrecords_dir(data_dir: str | os.PathLike[str], image_size: int) -> Path:
    """``<data_dir>/tfrecords_<image_size>``: holds ``train/`` and ``test/``, one split (and manifest) each."""
    return Path(data_dir) / f"tfrecords_{int(image_size)}"


class TFRecordsError(ValueError):
    """A TFRecord directory is missing, half-written or not what the caller expects; the message names it."""


# --- writing ---------------------------------------------------------------------------------------------


def write_tfrecords(
    folds_df: pd.DataFrame,
    image_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int,
    num_shards: int | None = None,
    quality: int = 95,
    *,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write ``folds_df``'s images (``image_dir/{Id}.jpg``) and columns as TFRecord shards; return the manifest.

    A frame with ``Pawpularity`` becomes ``train-*`` shards (fold from ``kfold``, or -1 without it); one
    without becomes ``test-*`` shards. ``num_shards=None`` sizes shards to at most ~200 MB.
    Existing shards and manifest in ``out_dir`` are replaced. ``workers`` (default and at most 2) encoding
    processes are used from 500 rows on; they are spawned, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard (``python -m lresizervit`` and notebooks are fine), or ``workers=1``.
    """
    _check_size(image_size)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer JPEG quality in 1..100, got {quality!r}")
    rows = _frame_columns(folds_df)
    n = len(rows["id"])
    split = "train" if rows["target"] is not None else "test"
    paths = [str(image_path(image_dir, i)) for i in rows["id"]]
    # Stable: each fold's rows keep the frame's order (see the module docstring).
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
        if _SHARD_NAME.match(p.name) and p.name not in names:
            p.unlink()

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "split": split,
        "image_size": int(image_size),
        "quality": int(quality),
        "chroma_subsampling": "4:4:4",
        "columns": {
            "id": ID,
            "metadata": list(META_COLUMNS),
            "target": TARGET if rows["target"] is not None else None,
            "fold": FOLD if rows["has_fold"] else None,
        },
        "total": n,
        "folds": _counts(rows["fold"]),
        "shards": shards,
        "source": {
            "image_dir": str(Path(image_dir).resolve()),
            "rows": n,
            "rows_sha256": rows_fingerprint(folds_df),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def rows_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's Ids, metadata, targets and folds, in row order (what the records were made from)."""
    rows = _frame_columns(df)
    h = hashlib.sha256()
    h.update("\n".join(rows["id"]).encode("utf-8") + b"\0")
    h.update(rows["metadata"].astype("<f4").tobytes())
    if rows["target"] is not None:
        h.update(b"target" + rows["target"].astype("<f4").tobytes())
    if rows["has_fold"]:
        h.update(b"fold" + rows["fold"].astype("<i8").tobytes())
    return h.hexdigest()


def _frame_columns(df: pd.DataFrame) -> dict[str, Any]:
    """The columns a record holds, checked: Ids unique, values finite, a fold only with a target."""
    missing = [c for c in (ID, *META_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"the frame lacks the column(s) {missing}")
    if len(df) == 0:
        raise ValueError("the frame has no rows to write")
    has_target, has_fold = TARGET in df.columns, FOLD in df.columns
    if has_fold and not has_target:
        raise ValueError(f"the frame has {FOLD!r} but no {TARGET!r}: folds only make sense for training rows")
    ids = [str(i) for i in df[ID]]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ValueError(f"duplicate Id {dup!r} in the frame")
    metadata = df[list(META_COLUMNS)].to_numpy(np.float32)
    if not np.isfinite(metadata).all():
        raise ValueError("the metadata columns hold missing or non-finite values")
    target = df[TARGET].to_numpy(np.float32) if has_target else None
    if target is not None and not np.isfinite(target).all():
        raise ValueError(f"{TARGET!r} holds missing or non-finite values")
    fold = df[FOLD].to_numpy(np.int64) if has_fold else np.full(len(df), -1, np.int64)
    if has_fold and (fold < 0).any():
        raise ValueError(f"{FOLD!r} holds negative values; folds are 0..K-1")
    return {"id": ids, "metadata": metadata, "target": target, "fold": fold, "has_fold": has_fold}


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


# --- reading ---------------------------------------------------------------------------------------------


def read_manifest(tfrec_dir: str | os.PathLike[str], image_size: int | None = None) -> dict[str, Any]:
    """The checked manifest of ``tfrec_dir`` (a local path or ``gs://...``): complete, ours, of ``image_size``.

    Every listed shard must exist with the byte size the manifest recorded, so a half-written or since
    overwritten directory fails here, naming the directory, rather than mid-epoch.
    """
    import tensorflow as tf

    d = os.fspath(tfrec_dir)
    if not tf.io.gfile.isdir(d):
        raise TFRecordsError(f"{d}: no such TFRecord directory (write it with write_tfrecords)")
    path = _join(d, MANIFEST)
    if not tf.io.gfile.exists(path):
        shards = [name for name in tf.io.gfile.listdir(d) if name.endswith(SHARD_SUFFIX)]
        if shards:
            raise TFRecordsError(
                f"{d}: {len(shards)} shard file(s) but no {MANIFEST}: half-written (an interrupted write?) "
                "or not written by write_tfrecords; write it again"
            )
        raise TFRecordsError(f"{d}: holds no TFRecords (no {MANIFEST}); write them with write_tfrecords")
    try:
        with tf.io.gfile.GFile(path, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
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
        shard_path = _join(d, shard["file"])
        if not tf.io.gfile.exists(shard_path):
            raise TFRecordsError(f"{d}: shard {shard['file']} is listed in {MANIFEST} but missing")
        size = tf.io.gfile.stat(shard_path).length
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
    tfrec_dir: str | os.PathLike[str], df: pd.DataFrame, image_size: int | None = None
) -> dict[str, Any]:
    """Refuse records written from other rows than ``df`` (Ids, metadata, targets or folds differ).

    Records written from an older folds file would validate each fold on rows the model trained on.
    Returns the manifest.
    """
    manifest = read_manifest(tfrec_dir, image_size)
    if manifest["source"]["rows_sha256"] != rows_fingerprint(df):
        raise TFRecordsError(
            f"{os.fspath(tfrec_dir)}: written from other rows ({manifest['source']['rows']} rows of "
            f"{manifest['source']['image_dir']}) than this frame ({len(df)} rows): its Ids, metadata, targets "
            "or folds differ; write the records again from this frame"
        )
    return manifest


def read_tfrecords(
    tfrec_dir: str | os.PathLike[str],
    folds: Iterable[int] | None = None,
    image_size: int | None = None,
) -> tf.data.Dataset:
    """Parsed records of ``folds`` (None: all), in stored order, with the image decoded.

    Elements: ``{"image": uint8 [H, W, 3], "metadata": float32 [12], "target": float32 [] (NaN for test),
    "id": string [], "fold": int64 []}``. ``image_size`` (if given) must match the manifest.
    """
    import tensorflow as tf

    d = os.fspath(tfrec_dir)
    manifest = read_manifest(d, image_size)
    ds = _records(d, manifest, folds, training=False, seed=0)

    def _decode(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = {k: ex[k] for k in ("metadata", "target", "id", "fold")}
        out["image"] = _decode_jpeg(ex["image"])
        return out

    return ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)


def make_tfrecord_dataset(
    tfrec_dir: str | os.PathLike[str],
    *,
    folds: Iterable[int] | None,
    image_size: int,
    batch_size: int,
    training: bool,
    augment_kwargs: Mapping[str, Any] | None = None,
    shuffle_seed: int = 0,
    pure_tf: bool = False,
    cache: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    num_parallel_calls: int | None = None,
) -> tf.data.Dataset:
    """The batches of ``pipeline.make_dataset``, read from TFRecords instead of loose JPEGs.

    ``({"image": uint8 [B,S,S,3], "metadata": float32 [B,12]}, target float32 [B])``, or the dict alone for
    records without targets. ``augment_kwargs`` are ``augment.train_transform``'s (a ``seed`` there overrides
    ``shuffle_seed`` for the augmentations) and are ignored when not training. ``pure_tf=True`` augments with
    TF ops only (for TPUs, which cannot run ``tf.numpy_function``); otherwise the albumentations transforms
    of the loose-file loader run. Without training the order is the stored one: each fold's rows in the
    order of the frame they were written from. ``drop_remainder=True`` gives a static batch dimension (TPU).
    """
    import tensorflow as tf

    from lresizervit.data import augment
    from lresizervit.data.pipeline import numpy_map

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    d = os.fspath(tfrec_dir)
    manifest = read_manifest(d, image_size)
    has_target = manifest["columns"]["target"] is not None
    size = int(image_size)
    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    kwargs = dict(augment_kwargs or {}) if training else {}
    aug_seed = kwargs.pop("seed", shuffle_seed)
    np_augment = None
    if pure_tf:
        # The same argument checks and names as the albumentations path, and its defaults for what is unset.
        augment.train_steps(size, **kwargs)
        kwargs = {**_keyword_defaults(augment.train_steps), **kwargs}
    else:
        transform = (
            augment.train_transform(size, seed=aug_seed, **kwargs)
            if training
            else augment.eval_transform(size)
        )
        # Built once: the graph captures this one transform, and its random state, for the dataset's life.
        np_augment = numpy_map(transform, (size, size, 3), short_side=size)

    records = _records(d, manifest, folds, training=training, seed=shuffle_seed)
    n = int(records.cardinality())

    def _shuffle(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.shuffle(min(n, shuffle_buffer), seed=shuffle_seed, reshuffle_each_iteration=True)

    def _with_seeds(ds: tf.data.Dataset) -> tf.data.Dataset:
        # One [2] stateless seed per element, a new stream every epoch, the same streams for the same seed.
        seeds = tf.data.Dataset.random(seed=aug_seed, rerandomize_each_iteration=True)
        seeds = seeds.batch(2, drop_remainder=True)  # static [2]: what the stateless ops take
        return tf.data.Dataset.zip((ds, seeds))

    def _element(row: Mapping[str, tf.Tensor], image: tf.Tensor) -> Any:
        features = {"image": image, "metadata": row["metadata"]}
        return (features, row["target"]) if has_target else features

    if cache:
        # Decode once, then cache: nothing random has happened yet, so every epoch may reuse it.
        def _decoded(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"image": _decode_jpeg(ex["image"]), "metadata": ex["metadata"], "target": ex["target"]}

        ds = records.map(_decoded, num_parallel_calls=calls).cache()
        if training:
            ds = _shuffle(ds)  # after the cache, or every epoch would replay epoch 1's order
        if not pure_tf:
            ds = ds.map(lambda row: _element(row, np_augment(row["image"])), num_parallel_calls=calls)
        elif training:
            ds = _with_seeds(ds).map(
                lambda row, seed: _element(row, tf_train_augment(row["image"], seed, size, **kwargs)),
                num_parallel_calls=calls,
            )
        else:
            ds = ds.map(lambda row: _element(row, tf_eval_crop(row["image"], size)), num_parallel_calls=calls)
    else:
        ds = _shuffle(records) if training else records
        if not pure_tf:
            ds = ds.map(
                lambda ex: _element(ex, np_augment(_decode_jpeg(ex["image"]))), num_parallel_calls=calls
            )
        elif training:
            ds = _with_seeds(ds).map(
                lambda ex, seed: _element(ex, _train_from_jpeg(ex, seed, size, **kwargs)),
                num_parallel_calls=calls,
            )
        else:
            ds = ds.map(lambda ex: _element(ex, _eval_from_jpeg(ex, size)), num_parallel_calls=calls)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


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
        if m["columns"]["metadata"] != list(META_COLUMNS):
            raise bad(f"lists the metadata columns {m['columns']['metadata']}, expected {list(META_COLUMNS)}")
        if not isinstance(m["image_size"], int) or not m["shards"] or "rows_sha256" not in m["source"]:
            raise bad("has no image_size, no shards or no source fingerprint")
        total = sum(int(s["count"]) for s in m["shards"])
        fold_total = sum(int(v) for v in m["folds"].values())
        per_shard = sum(int(v) for s in m["shards"] for v in s["folds"].values())
        if not total == fold_total == per_shard == int(m["total"]):
            raise bad(f"is inconsistent: total {m['total']}, shard counts sum to {total}")
        for s in m["shards"]:
            if not _SHARD_NAME.match(str(s["file"])) or not isinstance(s["bytes"], int):
                raise bad(f"lists a shard with an unexpected name or size: {s}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, TFRecordsError):
            raise
        raise bad(f"is malformed ({type(exc).__name__}: {exc})") from exc


def _join(d: str, name: str) -> str:
    # os.path / pathlib would turn "gs://bucket" into "gs:/bucket".
    return f"{d.rstrip('/')}/{name}" if "://" in d else os.path.join(d, name)


def _records(
    d: str, manifest: Mapping[str, Any], folds: Iterable[int] | None, *, training: bool, seed: int
) -> tf.data.Dataset:
    """Parsed, fold-filtered records (image still JPEG bytes) with the manifest's count as cardinality."""
    import tensorflow as tf

    present = {int(k) for k in manifest["folds"]}
    if folds is None:
        wanted = present
    else:
        wanted = {int(f) for f in folds}
        if not wanted:
            raise ValueError("folds is empty; pass None for every record")
        absent = sorted(wanted - present)
        if absent:
            raise TFRecordsError(
                f"{d}: holds no records of fold(s) {absent}; its folds are {sorted(present)}"
            )
    files: list[str] = []
    n = 0
    needs_filter = False
    for shard in manifest["shards"]:
        hits = sum(int(c) for k, c in shard["folds"].items() if int(k) in wanted)
        if hits:
            files.append(_join(d, shard["file"]))
            n += hits
            needs_filter |= hits < int(shard["count"])

    if training and len(files) > 1:
        # Reading several shards at once mixes them; the record shuffle buffer alone reaches only so far.
        file_ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        ds = file_ds.interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        # One shard after the other: records come out in the order they were written.
        ds = tf.data.TFRecordDataset(files)
    ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    if needs_filter:
        wanted_t = tf.constant(sorted(wanted), dtype=tf.int64)
        # Filtered while the image is still compressed: the rows of other folds are never decoded.
        ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["fold"], wanted_t)))
    # The manifest's count becomes the length: Keras knows the steps per epoch, and shards holding other
    # rows than the manifest says fail at the end of the pass instead of training on them silently.
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "metadata": tf.io.FixedLenFeature([len(META_COLUMNS)], tf.float32),
        "target": tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
        "id": tf.io.FixedLenFeature([], tf.string),
        "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    }
    return tf.io.parse_single_example(serialized, spec)


def _decode_jpeg(data: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.io.decode_jpeg(data, channels=3, dct_method=_DCT_METHOD)


# --- pure-TF augmentation (graph mode, no Python per image: runs on TPU hosts) -----------------------------


def tf_eval_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Deterministic centre square crop of ``size`` (as ``augment.eval_transform``): uint8 ``[S, S, 3]``."""
    import tensorflow as tf

    shape = tf.shape(image)
    y, x = (shape[0] - size) // 2, (shape[1] - size) // 2
    return tf.ensure_shape(image[y : y + size, x : x + size], [size, size, 3])


def tf_train_augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    *,
    crop_scale_min: float = 0.6,
    hflip_p: float = 0.5,
    color_jitter_p: float = 0.5,
    coarse_dropout_p: float = 0.3,
) -> tf.Tensor:
    """The TF-only twin of ``augment.train_transform`` for a uint8 ``[H, W, 3]`` image of shorter side ``size``.

    Random square crop (side in [sqrt(crop_scale_min), 1] x the shorter side, random position) resized to
    ``size`` -> hflip -> colour jitter -> coarse dropout. ``seed``: a ``[2]`` integer stateless seed; the
    same seed gives the same output. Returns uint8 ``[size, size, 3]``.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    shape = tf.shape(image)
    y, x, side = _crop_window(shape[0], shape[1], seeds[0], crop_scale_min)
    crop = image[y : y + side, x : x + side]
    return _augment_square(crop, seeds[1], size, hflip_p, color_jitter_p, coarse_dropout_p)


def _train_from_jpeg(
    ex: Mapping[str, tf.Tensor],
    seed: tf.Tensor,
    size: int,
    *,
    crop_scale_min: float,
    hflip_p: float,
    color_jitter_p: float,
    coarse_dropout_p: float,
) -> tf.Tensor:
    """``tf_train_augment`` of the record's image, decoding only the crop window: same draws, same pixels."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    height, width = tf.cast(ex["height"], tf.int32), tf.cast(ex["width"], tf.int32)
    y, x, side = _crop_window(height, width, seeds[0], crop_scale_min)
    # libjpeg skips the rows below the window and whatever blocks it can left and right of it.
    crop = tf.io.decode_and_crop_jpeg(
        ex["image"], tf.stack([y, x, side, side]), channels=3, dct_method=_DCT_METHOD
    )
    return _augment_square(crop, seeds[1], size, hflip_p, color_jitter_p, coarse_dropout_p)


def _eval_from_jpeg(ex: Mapping[str, tf.Tensor], size: int) -> tf.Tensor:
    """``tf_eval_crop`` decoding only the centre square."""
    import tensorflow as tf

    height, width = tf.cast(ex["height"], tf.int32), tf.cast(ex["width"], tf.int32)
    window = tf.stack([(height - size) // 2, (width - size) // 2, size, size])
    image = tf.io.decode_and_crop_jpeg(ex["image"], window, channels=3, dct_method=_DCT_METHOD)
    return tf.ensure_shape(image, [size, size, 3])


def _crop_window(
    height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor, crop_scale_min: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(y, x, side) of a random square: side uniform in [round(sqrt(crop_scale_min) * short), short]."""
    import tensorflow as tf

    short = tf.minimum(height, width)
    short_f = tf.cast(short, tf.float32)
    min_side = tf.clip_by_value(tf.cast(tf.round(math.sqrt(crop_scale_min) * short_f), tf.int32), 1, short)
    u = tf.random.stateless_uniform([3], seed=seed)
    # floor(u * count) with u in [0, 1) is uniform over 0..count-1; the minimum guards float rounding.
    side = tf.minimum(min_side + tf.cast(u[0] * tf.cast(short - min_side + 1, tf.float32), tf.int32), short)
    y = tf.minimum(tf.cast(u[1] * tf.cast(height - side + 1, tf.float32), tf.int32), height - side)
    x = tf.minimum(tf.cast(u[2] * tf.cast(width - side + 1, tf.float32), tf.int32), width - side)
    return y, x, side


def _augment_square(
    crop: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    hflip_p: float,
    color_jitter_p: float,
    coarse_dropout_p: float,
) -> tf.Tensor:
    """Square uint8 crop -> resized to ``size`` -> hflip -> colour jitter -> coarse dropout -> uint8.

    Float 0..255 with as few full-image ops as possible: at 384 px each op over the image costs ~0.35 ms
    of CPU, so the colour jitter is one 3x3 matrix, not four tf.image calls. (uint8 ops are no faster in
    TF: a reversed uint8 image costs the same, a uint8 multiply more.)
    """
    import tensorflow as tf

    # One seed per draw: whether each op fires, and what the jitter and the dropout draw.
    s = tf.random.experimental.stateless_split(seed, num=5)
    # Bilinear, as albumentations' RandomSizedCrop (cv2 INTER_LINEAR); the crop is never larger than size,
    # and a convex combination of pixels stays in 0..255.
    # (Cast first: resize's own uint8 path is ~30 % slower.)
    image = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method="bilinear")

    def fires(p: float, op_seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform([], seed=op_seed) < p

    image = tf.cond(fires(hflip_p, s[0]), lambda: tf.reverse(image, axis=[1]), lambda: image)
    image = tf.cond(fires(color_jitter_p, s[1]), lambda: _color_jitter(image, s[2]), lambda: image)
    image = tf.cond(fires(coarse_dropout_p, s[3]), lambda: _coarse_dropout(image, s[4], size), lambda: image)
    out = tf.saturate_cast(tf.round(image), tf.uint8)  # clamps too: the jitter leaves values unclipped
    return tf.ensure_shape(out, [size, size, 3])


# ITU-R 601 luma weights: the grey of albumentations' saturation and contrast (cv2 RGB2GRAY).
_LUMA = (0.299, 0.587, 0.114)


def _color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.02,
) -> tf.Tensor:
    """Brightness, contrast, saturation and hue changes of ``augment.train_steps``' ColorJitter.

    Each is linear in RGB, so they compose to ONE 3x3 matrix and offset, applied in a single pass:
    brightness scales by b; contrast pulls towards the image's mean grey, m + c (x - m); saturation
    pulls towards each pixel's grey, g + s (x - g); hue rotates about the grey axis by 2 pi h (the
    YIQ-style rotation, which matches an HSV hue shift closely at these small angles). The result is NOT
    clipped: the final ``saturate_cast`` to uint8 clamps it once (albumentations saturates after each op,
    which differs only where the mild factors push a pixel past 255 midway).
    """
    import tensorflow as tf

    u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    b, c, sat = 1.0 + brightness * u[0], 1.0 + contrast * u[1], 1.0 + saturation * u[2]
    theta = 2.0 * math.pi * hue * u[3]
    eye = tf.eye(3)
    luma = tf.constant([_LUMA])  # [1, 3]
    ones = tf.ones([3, 1])
    # x -> m x + t, with x a column RGB vector; start from brightness.
    m = b * eye
    t = tf.zeros([3, 1])
    # The image's mean grey, after the brightness change; every 4th row and column estimate it closely
    # at a 16th of the cost.
    mean_grey = b * tf.reduce_sum(luma * tf.reduce_mean(image[::4, ::4], axis=[0, 1])[None, :])
    m, t = c * m, c * t + (1.0 - c) * mean_grey * ones
    to_grey = sat * eye + (1.0 - sat) * ones @ luma  # x -> s x + (1 - s) (luma . x) 1
    m, t = to_grey @ m, to_grey @ t
    # Rodrigues' rotation about the unit grey axis (1, 1, 1) / sqrt(3).
    cross = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)
    rot = tf.cos(theta) * eye + tf.sin(theta) * cross + (1.0 - tf.cos(theta)) * tf.fill([3, 3], 1.0 / 3.0)
    m, t = rot @ m, rot @ t
    # A plain [pixels, 3] x [3, 3] matmul: ~1.6x faster than tensordot on the [S, S, 3] image.
    out = tf.matmul(tf.reshape(image, [-1, 3]), m, transpose_b=True) + tf.reshape(t, [1, 3])
    return tf.reshape(out, tf.shape(image))


def _coarse_dropout(image: tf.Tensor, seed: tf.Tensor, size: int, max_holes: int = 4) -> tf.Tensor:
    """1..max_holes rectangles of 5-15 % of each side, at random positions, set to 0."""
    import tensorflow as tf

    s = tf.random.experimental.stateless_split(seed, num=2)
    n_holes = tf.random.stateless_uniform([], s[0], minval=1, maxval=max_holes + 1, dtype=tf.int32)
    u = tf.random.stateless_uniform([max_holes, 4], s[1])
    hole_h = tf.maximum(1, tf.cast(tf.round((0.05 + 0.10 * u[:, 0]) * size), tf.int32))
    hole_w = tf.maximum(1, tf.cast(tf.round((0.05 + 0.10 * u[:, 1]) * size), tf.int32))
    y0 = tf.cast(u[:, 2] * tf.cast(size - hole_h + 1, tf.float32), tf.int32)
    x0 = tf.cast(u[:, 3] * tf.cast(size - hole_w + 1, tf.float32), tf.int32)
    pos = tf.range(size)[None, :]
    active = tf.cast(tf.range(max_holes) < n_holes, tf.float32)[:, None]
    in_rows = (
        tf.cast((pos >= y0[:, None]) & (pos < (y0 + hole_h)[:, None]), tf.float32) * active
    )  # [holes, S]
    in_cols = tf.cast((pos >= x0[:, None]) & (pos < (x0 + hole_w)[:, None]), tf.float32)  # [holes, S]
    # A hole is the outer product of its rows and columns; the sum over holes counts the holes on each pixel.
    covered = tf.matmul(in_rows, in_cols, transpose_a=True)  # [S, S]
    return image * tf.cast(covered == 0.0, image.dtype)[..., None]


def _keyword_defaults(fn: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def _check_size(size: int) -> None:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {size!r}")
