"""check-data's decode pass: every bad image named with its row and Id in one error; results cached by size
and mtime, so a rerun decodes only what changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lresizervit.data.image_check import cache_path, check_dataset, scan_images
from lresizervit.data.schema import SchemaError
from tests.facts import ID, TASK
from tests.photos import encode, photo, write, write_data_set


def test_truncated_empty_and_missing_images_are_all_named_with_row_and_id(tmp_path: Path) -> None:
    train, test = write_data_set(tmp_path)
    path = tmp_path / "train" / f"{train[ID][2]}.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    (tmp_path / "train" / f"{train[ID][5]}.jpg").write_bytes(b"")  # 0 bytes
    (tmp_path / "test" / f"{test[ID][1]}.jpg").write_bytes(b"GIF89a not really")  # unreadable
    (tmp_path / "train" / f"{train[ID][6]}.jpg").unlink()
    for i in (0, 1, 3):  # more problems than an error usually lists: every one must still be there
        p = tmp_path / "train" / f"{train[ID][i]}.jpg"
        p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(SchemaError) as info:
        check_dataset(tmp_path, TASK, workers=1)
    msg = str(info.value)
    assert "7 problems" in msg and "more" not in msg
    assert f"train.csv row 3 (line 4), Id '{train[ID][2]}': cannot decode image '{path}'" in msg
    assert "truncated" in msg
    assert f"train.csv row 6 (line 7), Id '{train[ID][5]}': image {tmp_path / 'train' / train[ID][5]}.jpg is empty " \
           "(0 bytes)" in msg
    assert f"train.csv row 7 (line 8), Id '{train[ID][6]}'" in msg and "not found" in msg
    assert f"test.csv row 2 (line 3), Id '{test[ID][1]}': cannot decode image" in msg
    assert len(info.value.problems) == 7


def test_valid_data_set_passes_and_gives_each_train_photo_a_hash(tmp_path: Path) -> None:
    write_data_set(tmp_path)
    check = check_dataset(tmp_path, TASK, workers=1)
    assert len(check.train) == 8 and len(check.test) == 3
    assert check.decoded == 11
    hashes = check.scans["train"].hashes
    assert len(set(hashes)) == 8 and all(len(s) == 64 for s in check.scans["train"].signatures)


def test_rerun_decodes_only_changed_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_data_set(data)
    cache = cache_path(tmp_path / "folds" / "train_folds.csv")
    assert cache == tmp_path / "folds" / "train_folds.images.json"
    first = check_dataset(data, TASK, cache, workers=1)
    assert first.decoded == 11
    stored = json.loads(cache.read_text())  # plain JSON, nothing that executes on load
    assert len(stored["images"]) == 11

    again = check_dataset(data, TASK, cache, workers=1)
    assert again.decoded == 0
    assert again.scans["train"].hashes == first.scans["train"].hashes
    assert again.scans["train"].signatures == first.scans["train"].signatures

    touched = data / "train" / "train004.jpg"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    resized = data / "test" / "test001.jpg"
    resized.write_bytes(encode(photo(7, 64, 64), quality=50))  # another size (and content)
    third = check_dataset(data, TASK, cache, workers=1)
    assert third.decoded == 2
    assert third.scans["train"].decoded_mask == [i == 4 for i in range(8)]
    assert third.scans["test"].decoded_mask == [False, True, False]

    # A file broken since the last pass is decoded again and found, although an entry for its path exists.
    touched.write_bytes(touched.read_bytes()[:-200])
    with pytest.raises(SchemaError, match="train004"):
        check_dataset(data, TASK, cache, workers=1)


def test_an_unreadable_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    write_data_set(tmp_path / "data")
    cache = tmp_path / "c.images.json"
    cache.write_text("{ not json")
    assert check_dataset(tmp_path / "data", TASK, cache, workers=1).decoded == 11
    assert check_dataset(tmp_path / "data", TASK, cache, workers=1).decoded == 0


def test_worker_processes_give_the_same_results(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"{i}.jpg", encode(photo(i, 48, 40), quality=80)) for i in range(70)]
    paths[9].write_bytes(paths[9].read_bytes()[:300])
    serial = scan_images(paths, workers=1)
    pooled = scan_images(paths, workers=2)
    assert pooled.decoded == serial.decoded == 70
    assert pooled.errors == serial.errors and pooled.hashes == serial.hashes
    assert [i for i, e in enumerate(pooled.errors) if e] == [9]
