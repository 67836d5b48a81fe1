"""tf.data input pipeline: file paths + metadata (+ targets) -> batches of uint8 images.

Order of the steps and why::

    paths, metadata[, target]
      -> shuffle (training, cache=False)   only strings are in the buffer, so a full-size buffer is cheap
      -> load       PIL decode (JPEG at reduced DCT scale) + resize to shorter side == S; the main cost
      -> cache      optional: epochs 2.. skip decoding; valid only because nothing random happened yet
      -> shuffle (training, cache=True)    after the cache, or every epoch would replay epoch 1's order
      -> augment    albumentations square crop (+ random ops when training) -> uint8 [S, S, 3]
      -> repeat -> batch -> prefetch

Without ``cache`` the load and augment steps run in ONE numpy_function per image: each round trip
through Python costs about 0.2 ms of CPU per image (measured: ~12% of the whole per-image cost for
800x600 JPEGs at S=128).

Images stay uint8 until the model (4x smaller buffers than float32); the model rescales them itself.

Reproducibility: the file order depends only on ``shuffle_seed`` (``map`` keeps the order). The training
augmentations draw from one generator seeded with ``shuffle_seed``; with ``num_parallel_calls`` > 1 the
threads reach that generator in a nondeterministic order, so which image gets which draw varies from run
to run. Pass ``num_parallel_calls=1`` when bit-exact augmentation matters more than speed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lresizervit.data import augment
from lresizervit.data.decode import load_image

__all__ = [
    "decode_benchmark_dataset",
    "load_image_tf",
    "make_dataset",
    "measure_images_per_second",
    "numpy_map",
]

PathLike = str | os.PathLike[str]


def load_image_tf(path: tf.Tensor, short_side: int) -> tf.Tensor:
    """Graph wrapper of ``load_image``: scalar string path -> uint8 ``[None, None, 3]``."""

    def _load(p: bytes | np.bytes_) -> np.ndarray:
        return load_image(os.fsdecode(bytes(p)), short_side)

    # stateful=False: decoding is a pure function of the path.
    image = tf.numpy_function(_load, [path], tf.uint8, stateful=False, name="load_image")
    # numpy_function forgets even the rank; later ops (crop, batch, the model) need at least this much.
    image.set_shape([None, None, 3])
    return image


def numpy_map(
    transform: Any,
    out_shape: Sequence[int | None] = (None, None, 3),
    *,
    short_side: int | None = None,
    decode: bool = False,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Wrap an albumentations transform as a tf function: uint8 ``[H, W, 3]`` -> uint8 ``out_shape``.

    With ``decode=True`` the input is instead a scalar string path, loaded with ``load_image(path,
    short_side)`` inside the same Python call. The same wrapper serves the pipeline and the tests that run
    each op inside tf.data. ``ensure_shape`` both restores the static shape numpy_function loses and checks
    it at run time.
    """
    if decode and short_side is None:
        raise ValueError("decode=True needs short_side, the size load_image resizes to")
    shape = list(out_shape)

    def _apply(x: np.ndarray | bytes) -> np.ndarray:
        image = load_image(os.fsdecode(bytes(x)), short_side) if decode else x
        return augment.apply_transform(transform, image, short_side=short_side)

    def fn(image: tf.Tensor) -> tf.Tensor:
        # stateful=True: the transform is random; a stateless op could be deduplicated or constant-folded.
        out = tf.numpy_function(_apply, [image], tf.uint8, stateful=True, name="augment")
        return tf.ensure_shape(out, shape)

    return fn


def make_dataset(
    paths: Sequence[PathLike],
    metadata: np.ndarray | Sequence[Sequence[float]],
    targets: np.ndarray | Sequence[float] | None = None,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment_kwargs: Mapping[str, Any] | None = None,
    shuffle_seed: int = 0,
    cache: bool = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of ``({"image": uint8 [B,S,S,3], "metadata": float32 [B,M]}, target float32 [B])``.

    With ``targets=None`` (test set) each element is the dict alone. ``augment_kwargs`` go to
    ``augment.train_transform`` (a ``seed`` there overrides ``shuffle_seed``) and are ignored when not
    training, so one config can build both. ``cache=True`` keeps every decoded image in memory
    (about ``N * S * S * 1.5 * 3`` bytes for 4:3 photos).
    """
    path_list = [os.fspath(p) for p in paths]
    n = len(path_list)
    if n == 0:
        raise ValueError("make_dataset needs at least one image path")
    meta = np.asarray(metadata, dtype=np.float32)
    if meta.ndim != 2 or meta.shape[0] != n:
        raise ValueError(f"metadata must have shape [{n}, n_columns] to match the paths, got {meta.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    if training:
        kwargs = dict(augment_kwargs or {})
        kwargs.setdefault("seed", shuffle_seed)
        transform = augment.train_transform(image_size, **kwargs)
    else:
        transform = augment.eval_transform(image_size)
    # Built once here: the graph captures this one object, and its random state, for the dataset's life.
    out_shape = (image_size, image_size, 3)
    augment_fn = numpy_map(transform, out_shape, short_side=image_size)
    load_and_augment_fn = numpy_map(transform, out_shape, short_side=image_size, decode=True)

    columns: dict[str, Any] = {"path": tf.constant(path_list, dtype=tf.string), "metadata": meta}
    if targets is not None:
        tgt = np.asarray(targets, dtype=np.float32)
        if tgt.shape != (n,):
            raise ValueError(f"targets must have shape [{n}] to match the paths, got {tgt.shape}")
        columns["target"] = tgt
    ds = tf.data.Dataset.from_tensor_slices(columns)

    def _shuffle(d: tf.data.Dataset) -> tf.data.Dataset:
        # A buffer of the whole set gives a uniform shuffle; reshuffled each epoch, the same sequence of
        # orders for the same seed.
        return d.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)

    if training and not cache:
        ds = _shuffle(ds)

    def _load(row: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(row)
        out["image"] = load_image_tf(out.pop("path"), image_size)
        return out

    def _element(row: dict[str, tf.Tensor], image: tf.Tensor) -> Any:
        features = {"image": image, "metadata": row["metadata"]}
        if "target" in row:
            return features, row["target"]
        return features

    if cache:
        ds = ds.map(_load, num_parallel_calls=num_parallel_calls).cache()
        if training:
            ds = _shuffle(ds)
        ds = ds.map(
            lambda row: _element(row, augment_fn(row["image"])), num_parallel_calls=num_parallel_calls
        )
    else:
        ds = ds.map(
            lambda row: _element(row, load_and_augment_fn(row["path"])), num_parallel_calls=num_parallel_calls
        )
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def decode_benchmark_dataset(paths: Sequence[PathLike], image_size: int, batch_size: int) -> tf.data.Dataset:
    """The plain all-TF baseline over the same files: full-size decode, squash-resize to S x S, uint8.

    For speed comparisons only: it distorts the aspect ratio and ignores EXIF orientation.
    """
    path_list = [os.fspath(p) for p in paths]

    def _load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (image_size, image_size))
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(path_list, dtype=tf.string))
    ds = ds.map(_load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def measure_images_per_second(
    ds: tf.data.Dataset, n_images_hint: int | None = None, warmup_batches: int = 2
) -> dict[str, float | int | bool]:
    """Iterate ``ds`` once and report its throughput, excluding the first ``warmup_batches`` batches.

    The batch size of each element is read from its first tensor, so any element structure works.
    ``n_images_hint`` stops the pass after that many images, which makes a ``repeat()``-ed dataset
    measurable. If the pass has no batch beyond the warm-up, all batches are timed and
    ``warmup_excluded`` is False.
    """
    if warmup_batches < 0:
        raise ValueError(f"warmup_batches must be >= 0, got {warmup_batches}")
    start = time.perf_counter()
    timed_start = start
    total_images = timed_images = batches = 0
    for element in ds:
        batch_images = int(tf.nest.flatten(element)[0].shape[0])
        batches += 1
        total_images += batch_images
        if batches <= warmup_batches:
            # The clock restarts after each warm-up batch: tracing, thread pools and autotuning happen here.
            timed_start = time.perf_counter()
        else:
            timed_images += batch_images
        if n_images_hint is not None and total_images >= n_images_hint:
            break
    end = time.perf_counter()
    warmup_excluded = timed_images > 0
    if not warmup_excluded:
        timed_start, timed_images = start, total_images
    seconds = end - timed_start
    return {
        "images_per_second": timed_images / seconds if seconds > 0 else float("nan"),
        "timed_images": timed_images,
        "timed_seconds": seconds,
        "total_images": total_images,
        "total_seconds": end - start,
        "batches": batches,
        "warmup_batches": min(warmup_batches, batches),
        "warmup_excluded": warmup_excluded,
    }
