"""Reading TFRecord shards back: decoded records, and the training / evaluation batches of ``pipeline``.

TPU hosts cannot run ``tf.numpy_function`` (the albumentations path), hence ``pure_tf=True``, which
augments with ``augment_tf``. albumentations is imported only when it is used, so that path runs on a host
without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import tensorflow as tf

from lresizervit.data.augment_params import train_params
from lresizervit.data.augment_tf import (
    WindowReader,
    tf_eval_crop,
    tf_eval_crop_window,
    tf_train_augment,
    tf_train_augment_window,
)
from lresizervit.data.records.manifest import TFRecordsError, join_path, read_manifest

__all__ = ["DEFAULT_SHUFFLE_BUFFER", "make_tfrecord_dataset", "read_tfrecords"]

# Records (JPEG bytes, ~100-150 KB each at 512 px) held by the training shuffle buffer: a full-set buffer
# would hold the whole data set in memory.
DEFAULT_SHUFFLE_BUFFER = 2048
# libjpeg's accurate integer IDCT, the one PIL uses: TF's default (fast IDCT) differs by a few levels.
_DCT_METHOD = "INTEGER_ACCURATE"


def read_tfrecords(
    tfrec_dir: str | os.PathLike[str],
    folds: Iterable[int] | None = None,
    image_size: int | None = None,
) -> tf.data.Dataset:
    """Parsed records of ``folds`` (None: all), in stored order, with the image decoded.

    Elements: ``{"image": uint8 [H, W, 3], "metadata": float32 [M], "target": float32 [] (NaN for test),
    "id": string [], "fold": int64 []}``. ``image_size`` (if given) must match the manifest.
    """
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

    ``({"image": uint8 [B,S,S,3], "metadata": float32 [B,M]}, target float32 [B])``, or the dict alone for
    records without targets. ``augment_kwargs`` are ``augment.train_transform``'s (a ``seed`` there overrides
    ``shuffle_seed`` for the augmentations) and are ignored when not training. ``pure_tf=True`` augments with
    TF ops only (for TPUs, which cannot run ``tf.numpy_function``); otherwise the albumentations transforms
    of the loose-file loader run. Without training the order is the stored one: each fold's rows in the
    order of the frame they were written from. ``drop_remainder=True`` gives a static batch dimension (TPU).
    """
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
        # The same argument checks, names and defaults as the albumentations path.
        kwargs = train_params(**kwargs)
    else:
        # Here, not at the top: a TPU input host (pure_tf) may lack albumentations.
        from lresizervit.data import augment
        from lresizervit.data.pipeline import numpy_map

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


def _records(
    d: str, manifest: Mapping[str, Any], folds: Iterable[int] | None, *, training: bool, seed: int
) -> tf.data.Dataset:
    """Parsed, fold-filtered records (image still JPEG bytes) with the manifest's count as cardinality."""
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
            files.append(join_path(d, shard["file"]))
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
    # The records say how many metadata values they hold; that they are the task's columns was checked
    # against the config when training started (manifest.check_matches_frame).
    spec = _feature_spec(len(manifest["columns"]["metadata"]))
    ds = ds.map(lambda serialized: tf.io.parse_single_example(serialized, spec), num_parallel_calls=tf.data.AUTOTUNE)
    if needs_filter:
        wanted_t = tf.constant(sorted(wanted), dtype=tf.int64)
        # Filtered while the image is still compressed: the rows of other folds are never decoded.
        ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["fold"], wanted_t)))
    # The manifest's count becomes the length: Keras knows the steps per epoch, and shards holding other
    # rows than the manifest says fail at the end of the pass instead of training on them silently.
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def _feature_spec(n_metadata: int) -> dict[str, tf.io.FixedLenFeature]:
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "metadata": tf.io.FixedLenFeature([n_metadata], tf.float32),
        "target": tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
        "id": tf.io.FixedLenFeature([], tf.string),
        "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    }


def _decode_jpeg(data: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_jpeg(data, channels=3, dct_method=_DCT_METHOD)


def _decode_window(data: tf.Tensor) -> WindowReader:
    """The ``augment_tf`` window reader of JPEG bytes ``data``: it decodes only the window asked for."""

    def read(y: tf.Tensor, x: tf.Tensor, side: tf.Tensor | int) -> tf.Tensor:
        # libjpeg skips the rows below the window and whatever blocks it can left and right of it.
        window = tf.stack([y, x, side, side])
        return tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=_DCT_METHOD)

    return read


def _train_from_jpeg(ex: Mapping[str, tf.Tensor], seed: tf.Tensor, size: int, **kwargs: Any) -> tf.Tensor:
    """``tf_train_augment`` of the record's image, decoding only the crop window: same draws, same pixels."""
    height, width = tf.cast(ex["height"], tf.int32), tf.cast(ex["width"], tf.int32)
    return tf_train_augment_window(_decode_window(ex["image"]), height, width, seed, size, **kwargs)


def _eval_from_jpeg(ex: Mapping[str, tf.Tensor], size: int) -> tf.Tensor:
    """``tf_eval_crop`` decoding only the centre square."""
    height, width = tf.cast(ex["height"], tf.int32), tf.cast(ex["width"], tf.int32)
    return tf_eval_crop_window(_decode_window(ex["image"]), height, width, size)
