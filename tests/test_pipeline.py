"""tf.data pipeline: structure, static shapes, order, caching, errors, and the plain-TF baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lresizervit.data import augment
from lresizervit.data.pipeline import (
    decode_benchmark_dataset,
    make_dataset,
    measure_images_per_second,
    numpy_map,
)

S = 32
N = 8
# Mixed sizes and orientations, including one smaller than S (upsampled by the loader).
SIZES = [(200, 300), (90, 60), (300, 200), (64, 64), (24, 40), (120, 90), (75, 150), (48, 33)]
NO_AUG = {"hflip_p": 0.0, "color_jitter_p": 0.0, "coarse_dropout_p": 0.0}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], np.ndarray, np.ndarray]:
    """N solid-colour JPEGs whose grey level (20 * i + 30) encodes their index i, the target."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i, (h, w) in enumerate(SIZES):
        path = root / f"{i:02d}.jpg"
        Image.new("RGB", (w, h), (20 * i + 30,) * 3).save(path, quality=95)
        paths.append(str(path))
    metadata = np.repeat(np.arange(N, dtype=np.float32)[:, None], 12, axis=1)  # row i is all i
    targets = np.arange(N, dtype=np.float32)
    return paths, metadata, targets


def _targets(ds: tf.data.Dataset) -> list[float]:
    return [float(t) for _, y in ds.as_numpy_iterator() for t in y]


def test_training_batches_structure_dtypes_and_static_shapes(images):
    paths, metadata, targets = images
    ds = make_dataset(paths, metadata, targets, image_size=S, batch_size=3, training=True)
    features_spec, target_spec = ds.element_spec
    assert set(features_spec) == {"image", "metadata"}
    assert features_spec["image"].shape.as_list() == [None, S, S, 3]
    assert features_spec["image"].dtype == tf.uint8
    assert features_spec["metadata"].shape.as_list() == [None, 12]
    assert features_spec["metadata"].dtype == tf.float32
    assert target_spec.shape.as_list() == [None] and target_spec.dtype == tf.float32

    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [3, 3, 2]
    for features, y in batches:
        assert features["image"].dtype == np.uint8 and features["image"].shape[1:] == (S, S, 3)
        assert features["metadata"].dtype == np.float32 and y.dtype == np.float32
    assert sorted(t for _, y in batches for t in y) == list(range(N))  # each image once per epoch


def test_drop_remainder_gives_a_fully_static_spec(images):
    paths, metadata, targets = images
    ds = make_dataset(
        paths, metadata, targets, image_size=S, batch_size=3, training=True, drop_remainder=True
    )
    features_spec, target_spec = ds.element_spec
    assert features_spec["image"].shape.as_list() == [3, S, S, 3]
    assert features_spec["metadata"].shape.as_list() == [3, 12]
    assert target_spec.shape.as_list() == [3]
    assert len(list(ds)) == N // 3


def test_test_mode_yields_the_feature_dict_only(images):
    paths, metadata, _ = images
    ds = make_dataset(paths, metadata, None, image_size=S, batch_size=4, training=False)
    assert isinstance(ds.element_spec, dict) and set(ds.element_spec) == {"image", "metadata"}
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2 and all(isinstance(b, dict) for b in batches)
    # Not training: file order is kept, so predictions line up with the test ids.
    np.testing.assert_array_equal(np.concatenate([b["metadata"][:, 0] for b in batches]), np.arange(N))


@pytest.mark.parametrize("cache", [False, True])
def test_images_metadata_and_targets_stay_aligned_through_the_shuffle(images, cache):
    paths, metadata, targets = images
    ds = make_dataset(
        paths,
        metadata,
        targets,
        image_size=S,
        batch_size=3,
        training=True,
        augment_kwargs=NO_AUG,
        cache=cache,
    )
    for features, y in ds.as_numpy_iterator():
        np.testing.assert_array_equal(features["metadata"][:, 0], y)
        grey = features["image"].reshape(len(y), -1).mean(axis=1)
        np.testing.assert_allclose(grey, 20 * y + 30, atol=2)


@pytest.mark.parametrize("cache", [False, True])
def test_same_shuffle_seed_same_order_and_a_new_order_each_epoch(images, cache):
    paths, metadata, targets = images

    def orders(seed: int) -> list[list[float]]:
        ds = make_dataset(
            paths,
            metadata,
            targets,
            image_size=S,
            batch_size=3,
            training=True,
            shuffle_seed=seed,
            cache=cache,
        )
        return [_targets(ds) for _ in range(3)]  # three epochs of the same dataset object

    first, again, other = orders(5), orders(5), orders(6)
    assert first == again
    assert first != other
    # Reshuffled every epoch; with cache=True this would fail if the shuffle came before the cache.
    assert len({tuple(epoch) for epoch in first}) > 1


def test_single_threaded_training_is_bit_reproducible(images):
    paths, metadata, targets = images

    def images_of(seed: int) -> np.ndarray:
        augment_kwargs = {"hflip_p": 0.5, "color_jitter_p": 1.0, "coarse_dropout_p": 1.0}
        ds = make_dataset(
            paths,
            metadata,
            targets,
            image_size=S,
            batch_size=4,
            training=True,
            shuffle_seed=seed,
            num_parallel_calls=1,
            augment_kwargs=augment_kwargs,
        )
        return np.concatenate([f["image"] for f, _ in ds.as_numpy_iterator()])

    np.testing.assert_array_equal(images_of(1), images_of(1))


def test_cache_gives_the_same_eval_images(images):
    paths, metadata, targets = images
    plain = make_dataset(paths, metadata, targets, image_size=S, batch_size=4, training=False)
    cached = make_dataset(paths, metadata, targets, image_size=S, batch_size=4, training=False, cache=True)
    expected = [f["image"] for f, _ in plain.as_numpy_iterator()]
    for _ in range(2):  # the first pass fills the cache, the second reads it
        got = [f["image"] for f, _ in cached.as_numpy_iterator()]
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_repeat_runs_past_the_epoch(images):
    paths, metadata, targets = images
    ds = make_dataset(paths, metadata, targets, image_size=S, batch_size=4, training=True, repeat=True)
    assert len(list(ds.take(5))) == 5  # 5 batches of 4 > 8 images


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_a_broken_file_raises_with_its_path(images, tmp_path: Path, training, cache):
    paths, metadata, targets = images
    broken = tmp_path / "ffe0c2broken.jpg"
    broken.write_text("not a jpeg")
    all_paths, all_metadata, all_targets = (
        [*paths, str(broken)],
        np.vstack([metadata, metadata[:1]]),
        [*targets, 0],
    )
    ds = make_dataset(
        all_paths, all_metadata, all_targets, image_size=S, batch_size=4, training=training, cache=cache
    )
    with pytest.raises(tf.errors.OpError, match="ffe0c2broken.jpg"):
        for _ in ds:
            pass


def test_a_missing_file_raises_with_its_path(images):
    paths, metadata, _ = images
    missing = str(Path(paths[0]).with_name("0f00d.jpg"))
    ds = make_dataset([missing], metadata[:1], None, image_size=S, batch_size=1, training=False)
    with pytest.raises(tf.errors.OpError, match="0f00d.jpg"):
        next(iter(ds))


def test_decode_wrapper_needs_the_size():
    with pytest.raises(ValueError, match="short_side"):
        numpy_map(augment.eval_transform(S), (S, S, 3), decode=True)


def test_mismatched_lengths_are_rejected(images):
    paths, metadata, targets = images
    with pytest.raises(ValueError, match="metadata"):
        make_dataset(paths, metadata[:-1], targets, image_size=S, batch_size=2, training=False)
    with pytest.raises(ValueError, match="targets"):
        make_dataset(paths, metadata, targets[:-1], image_size=S, batch_size=2, training=False)


def test_plain_decode_pipeline_yields_same_shaped_batches(images):
    paths, metadata, targets = images
    ours = make_dataset(paths, metadata, targets, image_size=S, batch_size=3, training=False)
    plain = decode_benchmark_dataset(paths, image_size=S, batch_size=3)
    assert plain.element_spec.shape.as_list() == ours.element_spec[0]["image"].shape.as_list()
    assert plain.element_spec.dtype == tf.uint8
    ours_shapes = [f["image"].shape for f, _ in ours.as_numpy_iterator()]
    plain_shapes = [b.shape for b in plain.as_numpy_iterator()]
    assert ours_shapes == plain_shapes


def test_measure_images_per_second_counts_images(images):
    paths, metadata, targets = images
    ds = make_dataset(paths, metadata, targets, image_size=S, batch_size=3, training=False)
    stats = measure_images_per_second(ds, warmup_batches=1)
    assert stats["total_images"] == N and stats["batches"] == 3
    assert stats["timed_images"] == N - 3 and stats["warmup_excluded"]
    assert stats["images_per_second"] > 0
    # A repeated dataset stops at the hint; too few batches for the warm-up still gives a number.
    repeated = decode_benchmark_dataset(paths, S, 4).repeat()
    assert measure_images_per_second(repeated, n_images_hint=20)["total_images"] == 20
    short = measure_images_per_second(decode_benchmark_dataset(paths, S, 8), warmup_batches=2)
    assert not short["warmup_excluded"] and short["timed_images"] == N
