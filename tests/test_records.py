"""TFRecord shards: round trip, fold filtering, manifest checks, and the loader's elements (both augment paths)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lresizervit.data.decode import load_image
from lresizervit.data.pipeline import make_dataset
from lresizervit.data.records import writer
from lresizervit.data.records.manifest import (
    TFRecordsError,
    check_matches_frame,
    default_tfrecords_dir,
    read_manifest,
    records_per_fold,
)
from lresizervit.data.records.reader import make_tfrecord_dataset, read_tfrecords
from lresizervit.data.records.writer import write_tfrecords
from tests.conftest import photo_like
from tests.facts import FOLD, ID, META_COLUMNS, TARGET, TASK, TEST_COLUMNS, TRAIN_COLUMNS

S = 32
# The fixture keeps train and test images in one folder: a task whose image layout says so.
IMAGES = dataclasses.replace(TASK, image_path="images/{id}.jpg")
N_TRAIN, N_TEST, N_FOLDS = 18, 4, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """22 JPEGs of varied size and aspect (one EXIF-rotated, one smaller than S), train/test frames, records."""
    root = tmp_path_factory.mktemp("tfrec")
    rng = np.random.default_rng(0)
    image_dir = root / "images"
    image_dir.mkdir()
    n = N_TRAIN + N_TEST
    ids = [f"{i:02d}{rng.bytes(4).hex()}" for i in range(n)]
    for i, image_id in enumerate(ids):
        h, w = (20, 28) if i == 3 else (int(rng.integers(40, 160)), int(rng.integers(40, 160)))
        img = Image.fromarray(photo_like(rng, h, w))
        if i == 5:
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 degrees clockwise": load_image transposes it
            img.save(image_dir / f"{image_id}.jpg", quality=95, exif=exif)
        else:
            img.save(image_dir / f"{image_id}.jpg", quality=95)
    meta = rng.integers(0, 2, (n, len(META_COLUMNS)))
    frame = pd.DataFrame(meta, columns=list(META_COLUMNS))
    frame.insert(0, ID, ids)
    train = frame.iloc[:N_TRAIN].copy()
    train[TARGET] = rng.integers(1, 101, N_TRAIN)
    train[FOLD] = rng.permutation(np.arange(N_TRAIN) % N_FOLDS)
    assert list(train.columns) == [*TRAIN_COLUMNS, FOLD]
    test = frame.iloc[N_TRAIN:].reset_index(drop=True)
    assert list(test.columns) == list(TEST_COLUMNS)

    train_dir, test_dir = root / "train_rec", root / "test_rec"
    # 3 shards of a fold-sorted frame: each fold lives in 1-2 shards, so fold selection skips and filters.
    write_tfrecords(train, root, train_dir, S, IMAGES, num_shards=3, workers=1)
    write_tfrecords(test, root, test_dir, S, IMAGES, workers=1)
    return {
        "root": root,
        "images": image_dir,
        "train": train,
        "test": test,
        "train_dir": train_dir,
        "test_dir": test_dir,
    }


def _paths(data: dict, df: pd.DataFrame) -> list[str]:
    return [str(data["images"] / f"{i}.jpg") for i in df[ID]]


def _read_all(tfrec_dir: Path, folds=None) -> list[dict]:
    return list(read_tfrecords(tfrec_dir, folds=folds, image_size=S).as_numpy_iterator())


# --- writing and reading back -----------------------------------------------------------------------------


def test_round_trip_preserves_columns_and_images(data):
    train = data["train"]
    records = _read_all(data["train_dir"])
    assert len(records) == N_TRAIN
    by_id = {r["id"].decode(): r for r in records}
    assert set(by_id) == set(train[ID])
    for _, row in train.iterrows():
        r = by_id[row[ID]]
        np.testing.assert_array_equal(r["metadata"], row[list(META_COLUMNS)].to_numpy(np.float32))
        assert r["metadata"].dtype == np.float32 and r["target"].dtype == np.float32
        assert r["target"] == row[TARGET] and r["fold"] == row[FOLD]
        ref = load_image(data["images"] / f"{row[ID]}.jpg", S)
        assert r["image"].dtype == np.uint8 and r["image"].shape == ref.shape and min(ref.shape[:2]) == S
        assert np.abs(r["image"].astype(np.int16) - ref).mean() < 3.0  # JPEG re-encode only


def test_exif_rotation_and_small_images_are_stored_as_load_image_returns_them(data):
    by_id = {r["id"].decode(): r for r in _read_all(data["train_dir"])}
    small, rotated = data["train"][ID].iloc[3], data["train"][ID].iloc[5]
    assert by_id[small]["image"].shape == (S, round(28 * S / 20), 3)  # upsampled, aspect kept
    with Image.open(data["images"] / f"{rotated}.jpg") as img:
        w, h = img.size
    assert by_id[rotated]["image"].shape[:2] == load_image(data["images"] / f"{rotated}.jpg", S).shape[:2]
    assert (by_id[rotated]["image"].shape[0] > by_id[rotated]["image"].shape[1]) == (w > h)  # transposed


def test_fold_filtering_returns_exactly_those_rows_in_frame_order(data):
    train = data["train"]
    for folds in ([0], [2], [0, 2]):
        got = [r["id"].decode() for r in _read_all(data["train_dir"], folds)]
        expected = train[train[FOLD].isin(folds)].sort_values(FOLD, kind="stable")[ID].tolist()
        assert got == expected
    assert [r["id"].decode() for r in _read_all(data["train_dir"])] == train.sort_values(FOLD, kind="stable")[
        ID
    ].tolist()
    assert records_per_fold(data["train_dir"]) == train[FOLD].value_counts().sort_index().to_dict()
    with pytest.raises(TFRecordsError, match=r"no records of fold\(s\) \[7\]"):
        read_tfrecords(data["train_dir"], folds=[7])


def test_manifest_describes_the_directory(data):
    m = read_manifest(data["train_dir"], S)
    assert m["image_size"] == S and m["split"] == "train" and m["total"] == N_TRAIN
    assert m["columns"]["metadata"] == list(META_COLUMNS) and m["columns"]["target"] == TARGET
    names = sorted(p.name for p in data["train_dir"].glob("*.tfrec"))
    assert names == [f"train-{i:05d}-of-00003.tfrec" for i in range(3)]
    assert [s["file"] for s in m["shards"]] == names and sum(s["count"] for s in m["shards"]) == N_TRAIN
    assert not list(data["train_dir"].glob(".*"))  # no temp files left
    check_matches_frame(data["train_dir"], data["train"], S, IMAGES)
    moved = data["train"].copy()
    moved.loc[0, FOLD] = (moved.loc[0, FOLD] + 1) % N_FOLDS
    with pytest.raises(TFRecordsError, match="written from other rows"):
        check_matches_frame(data["train_dir"], moved, None, IMAGES)


def test_a_url_is_read_through_tensorflows_file_systems(data):
    """A local directory is read with `os` (no TensorFlow import); a URL (gs:// on a TPU) through tf.io.gfile,
    here its in-memory ram:// file system: the same manifest, and the same refusals."""
    import tensorflow as tf

    url = f"ram://records_{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(url)
    for path in data["train_dir"].iterdir():
        tf.io.gfile.copy(str(path), f"{url}/{path.name}")
    assert read_manifest(url, S) == read_manifest(data["train_dir"], S)
    check_matches_frame(url, data["train"], S, IMAGES)
    shard = read_manifest(url)["shards"][0]["file"]
    with tf.io.gfile.GFile(f"{url}/{shard}", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(TFRecordsError, match=f"shard {shard} has .* bytes"):
        read_manifest(url)
    tf.io.gfile.remove(f"{url}/{shard}")
    with pytest.raises(TFRecordsError, match=f"shard {shard} is listed"):
        read_manifest(url)
    with pytest.raises(TFRecordsError, match="no such TFRecord directory"):
        read_manifest(f"{url}_missing")


def test_test_records_have_no_target_and_yield_dicts_only(data):
    test = data["test"]
    m = read_manifest(data["test_dir"])
    assert m["split"] == "test" and m["columns"]["target"] is None
    assert [p.name for p in data["test_dir"].glob("*.tfrec")] == ["test-00000-of-00001.tfrec"]
    assert records_per_fold(data["test_dir"]) == {-1: N_TEST}
    records = _read_all(data["test_dir"])
    assert [r["id"].decode() for r in records] == test[ID].tolist()
    assert all(np.isnan(r["target"]) and r["fold"] == -1 for r in records)
    for pure_tf in (False, True):
        ds = make_tfrecord_dataset(
            data["test_dir"], folds=None, image_size=S, batch_size=3, training=False, pure_tf=pure_tf
        )
        ref = make_dataset(
            _paths(data, test),
            test[list(META_COLUMNS)].to_numpy(np.float32),
            None,
            image_size=S,
            batch_size=3,
            training=False,
        )
        assert ds.element_spec == ref.element_spec and isinstance(ds.element_spec, dict)
        assert [len(b["image"]) for b in ds.as_numpy_iterator()] == [3, 1]


def test_worker_processes_write_the_same_bytes(data, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_MIN_ROWS_FOR_WORKERS", 0)
    write_tfrecords(data["train"], data["root"], tmp_path, S, IMAGES, num_shards=3, workers=2)
    for shard in read_manifest(data["train_dir"])["shards"]:
        assert (tmp_path / shard["file"]).read_bytes() == (data["train_dir"] / shard["file"]).read_bytes()


def test_auto_shard_count_and_rewrite_removes_stale_shards(data, tmp_path, monkeypatch):
    df = data["train"].iloc[:6]
    assert len(write_tfrecords(df, data["root"], tmp_path, S, IMAGES, workers=1)["shards"]) == 1
    monkeypatch.setattr(writer, "MAX_SHARD_BYTES", 4000)  # a few records per shard
    m = write_tfrecords(df, data["root"], tmp_path, S, IMAGES, workers=1)
    assert len(m["shards"]) > 1
    assert sorted(p.name for p in tmp_path.glob("*.tfrec")) == [s["file"] for s in m["shards"]]
    assert sorted(r["id"].decode() for r in _read_all(tmp_path)) == sorted(df[ID])


def test_failed_write_leaves_no_manifest_and_no_temp_files(data, tmp_path):
    df = data["train"].iloc[:4]
    write_tfrecords(df, data["root"], tmp_path, S, IMAGES, workers=1)
    broken = df.copy()
    broken.loc[broken.index[2], ID] = "does-not-exist"
    # Caught while sizing the shards: the previous records are untouched and still valid.
    with pytest.raises(ValueError, match="does-not-exist"):
        write_tfrecords(broken, data["root"], tmp_path, S, IMAGES, workers=1)
    assert records_per_fold(tmp_path) == df[FOLD].value_counts().sort_index().to_dict()
    # Caught mid-write: the manifest is gone, so no reader mixes old and new shards.
    with pytest.raises(ValueError, match="does-not-exist"):
        write_tfrecords(broken, data["root"], tmp_path, S, IMAGES, num_shards=2, workers=1)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(TFRecordsError, match="half-written"):
        read_manifest(tmp_path)


def test_bad_frames_are_refused(data, tmp_path):
    with pytest.raises(ValueError, match="duplicate Id"):
        write_tfrecords(pd.concat([data["test"], data["test"]]), data["root"], tmp_path, S, IMAGES)
    with pytest.raises(ValueError, match="lacks the column"):
        write_tfrecords(data["test"].drop(columns=["Eyes"]), data["root"], tmp_path, S, IMAGES)


# --- manifest checks ----------------------------------------------------------------------------------------


def test_missing_empty_and_mismatched_directories_name_the_directory(data, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TFRecordsError, match=f"{missing}: no such TFRecord directory"):
        read_tfrecords(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TFRecordsError, match=f"{empty}: holds no TFRecords"):
        make_tfrecord_dataset(empty, folds=None, image_size=S, batch_size=2, training=False)
    with pytest.raises(
        TFRecordsError, match=rf"{data['train_dir']}: .*shorter side of {S} px.*image_size 64"
    ):
        make_tfrecord_dataset(data["train_dir"], folds=[0], image_size=64, batch_size=2, training=True)


def test_missing_manifest_changed_shard_and_foreign_manifest_are_refused(data, tmp_path):
    d = tmp_path / "copy"
    d.mkdir()
    for p in data["train_dir"].iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    manifest = d / "manifest.json"
    text = manifest.read_text()
    manifest.unlink()
    with pytest.raises(TFRecordsError, match=f"{d}: 3 shard file.*no manifest.json"):
        read_tfrecords(d)
    manifest.write_text(text)
    shard = d / "train-00001-of-00003.tfrec"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TFRecordsError, match=f"{d}: shard train-00001-of-00003.tfrec has"):
        read_tfrecords(d)
    manifest.write_text(json.dumps({"hello": 1}))
    with pytest.raises(TFRecordsError, match="not a lresizervit-tfrecords manifest"):
        records_per_fold(d)
    manifest.write_text("{")
    with pytest.raises(TFRecordsError, match="not valid JSON"):
        records_per_fold(d)


# --- the loader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pure_tf", [False, True], ids=["albumentations", "pure_tf"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cache", [False, True], ids=["stream", "cache"])
def test_same_structure_dtypes_and_static_shapes_as_make_dataset(data, training, pure_tf, cache):
    train = data["train"]
    rows = train[train[FOLD] != 0]
    ds = make_tfrecord_dataset(
        data["train_dir"],
        folds=[1, 2],
        image_size=S,
        batch_size=4,
        training=training,
        pure_tf=pure_tf,
        cache=cache,
    )
    ref = make_dataset(
        _paths(data, rows),
        rows[list(META_COLUMNS)].to_numpy(np.float32),
        rows[TARGET].to_numpy(np.float32),
        image_size=S,
        batch_size=4,
        training=training,
    )
    assert ds.element_spec == ref.element_spec
    assert ds.element_spec[0]["image"].shape.as_list() == [None, S, S, 3]
    assert ds.cardinality() == ref.cardinality() == -(-len(rows) // 4)
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [len(y) for _, y in ref.as_numpy_iterator()]
    got = sorted(float(t) for _, y in batches for t in y)
    assert got == sorted(rows[TARGET].astype(float))
    for features, y in batches:
        assert features["image"].dtype == np.uint8 and features["image"].shape[1:] == (S, S, 3)
        assert features["metadata"].dtype == np.float32 and y.dtype == np.float32


def test_eval_images_match_the_loose_file_loader(data):
    train = data["train"]
    rows = train[train[FOLD] == 1]
    ref = make_dataset(
        _paths(data, rows),
        rows[list(META_COLUMNS)].to_numpy(np.float32),
        rows[TARGET].to_numpy(np.float32),
        image_size=S,
        batch_size=4,
        training=False,
    )
    ref_batches = list(ref.as_numpy_iterator())
    ref_x = np.concatenate([f["image"] for f, _ in ref_batches])
    ref_y = np.concatenate([y for _, y in ref_batches])
    outputs = {}
    for pure_tf in (False, True):
        ds = make_tfrecord_dataset(
            data["train_dir"], folds=[1], image_size=S, batch_size=4, training=False, pure_tf=pure_tf
        )
        batches = list(ds.as_numpy_iterator())
        x = np.concatenate([f["image"] for f, _ in batches])
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), ref_y)  # same order
        np.testing.assert_array_equal(
            np.concatenate([f["metadata"] for f, _ in batches]), rows[list(META_COLUMNS)].to_numpy(np.float32)
        )
        assert np.abs(x.astype(np.int16) - ref_x).mean() < 3.0
        outputs[pure_tf] = x
    # Decoding only the centre window gives the very pixels of a full decode + centre crop.
    np.testing.assert_array_equal(outputs[True], outputs[False])


def test_pure_tf_training_is_reproducible_and_changes_every_epoch(data):
    def first_epochs(seed: int) -> list[np.ndarray]:
        ds = make_tfrecord_dataset(
            data["train_dir"],
            folds=[0],
            image_size=S,
            batch_size=64,
            training=True,
            pure_tf=True,
            shuffle_seed=seed,
        )
        return [next(iter(ds))[0]["image"] for _ in range(2)]

    a, b = first_epochs(1), first_epochs(1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], first_epochs(2)[0])


def test_pure_tf_crop_window_decode_equals_full_decode_then_crop(data):
    # The streaming path decodes only the crop window; the cached one crops a full decode. Same seed,
    # same shuffle: the very same pixels.
    epochs = [
        list(
            make_tfrecord_dataset(
                data["train_dir"],
                folds=[0, 2],
                image_size=S,
                batch_size=64,
                training=True,
                pure_tf=True,
                cache=cache,
                shuffle_seed=5,
            ).as_numpy_iterator()
        )[0]
        for cache in (False, True)
    ]
    np.testing.assert_array_equal(epochs[0][0]["image"], epochs[1][0]["image"])
    np.testing.assert_array_equal(epochs[0][1], epochs[1][1])


def test_repeat_and_drop_remainder_give_static_batches(data):
    ds = make_tfrecord_dataset(
        data["train_dir"],
        folds=[0, 1],
        image_size=S,
        batch_size=5,
        training=True,
        pure_tf=True,
        repeat=True,
        drop_remainder=True,
    )
    assert ds.element_spec[0]["image"].shape.as_list() == [5, S, S, 3]
    assert ds.element_spec[1].shape.as_list() == [5]
    assert sum(1 for _ in ds.take(7)) == 7  # past the 12 rows of one pass


def test_bad_augment_kwargs_fail_like_the_albumentations_path(data):
    for pure_tf in (False, True):
        with pytest.raises(ValueError, match="hflip_p must be a probability"):
            make_tfrecord_dataset(
                data["train_dir"],
                folds=[0],
                image_size=S,
                batch_size=2,
                training=True,
                pure_tf=pure_tf,
                augment_kwargs={"hflip_p": 2.0},
            )


def test_pure_tf_loader_runs_without_albumentations(data):
    # A TPU input host may lack albumentations: the pure-TF path must neither import nor need it.
    code = f"""
import sys
sys.modules["albumentations"] = None  # any import of it now raises ImportError
from lresizervit.data.records.reader import make_tfrecord_dataset
for training in (True, False):
    ds = make_tfrecord_dataset({str(data["train_dir"])!r}, folds=[0], image_size={S}, batch_size=2,
                               training=training, pure_tf=True)
    assert next(iter(ds))[0]["image"].shape == (2, {S}, {S}, 3)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_tfrecord_dirs_accept_pathlike_and_str(data):
    assert records_per_fold(os.fspath(data["train_dir"])) == records_per_fold(Path(data["train_dir"]))
    assert default_tfrecords_dir("input/x", 512) == Path("input/x/tfrecords_512")


_KILLED_WRITE = """
import os, signal, sys
import pandas as pd
from lresizervit.data.records import writer
from tests.test_records import ID, IMAGES, S
train = pd.read_csv(sys.argv[1], dtype={ID: str})
encode, seen = writer._encode_task, []

def encode_then_die(task):
    seen.append(task)
    if len(seen) == 9:  # shard 1 of 3 is written, shard 2 half-written: killed as a notebook's time limit does
        os.kill(os.getpid(), signal.SIGKILL)
    return encode(task)

writer._encode_task = encode_then_die
writer.write_tfrecords(train, sys.argv[2], sys.argv[3], S, IMAGES, num_shards=3, workers=1)
"""


def test_a_write_killed_between_shards_is_never_read_as_complete(data, tmp_path):
    import shutil

    out = tmp_path / "rec"
    shutil.copytree(data["train_dir"], out)  # complete records of the same rows, being rewritten
    frame = tmp_path / "train.csv"
    data["train"].to_csv(frame, index=False)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(frame), str(data["root"]), str(out)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list(out.glob(".train-00001-of-00003.tfrec.*.tmp"))  # the half-written shard, never renamed
    for read in (lambda: read_manifest(out), lambda: check_matches_frame(out, data["train"], S, IMAGES),
                 lambda: read_tfrecords(out)):
        with pytest.raises(TFRecordsError, match="half-written"):
            read()
    # Written again, it is complete, and the killed write's temp shard is gone.
    write_tfrecords(data["train"], data["root"], out, S, IMAGES, num_shards=3, workers=1)
    assert not list(out.glob(".*")) and records_per_fold(out) == records_per_fold(data["train_dir"])
