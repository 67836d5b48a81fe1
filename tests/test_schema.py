"""Strict readers: valid files pass, every kind of problem names file, row, line and column."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lresizervit.data.schema import SchemaError, check_images, read_table, validate_dataset
from tests.facts import ID, META_COLUMNS, TARGET, TASK, TEST_COLUMNS, TRAIN_COLUMNS


def _ids(n: int) -> list[str]:
    # Leading zeros and all-digit Ids: pandas must not read them as numbers.
    return [f"{i:032x}" for i in range(n)]


def _train_frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({ID: _ids(n)})
    for col in META_COLUMNS:
        df[col] = rng.integers(0, 2, n)
    df[TARGET] = rng.integers(1, 101, n)
    return df


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "train.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _error(path: Path, kind: str = "train") -> str:
    with pytest.raises(SchemaError) as info:
        read_table(path, kind, TASK)
    return str(info.value)


def test_valid_train_and_test_read_back_typed(tmp_path: Path) -> None:
    df = _train_frame()
    train = read_table(_write(tmp_path, df), "train", TASK)
    assert tuple(train.columns) == TRAIN_COLUMNS
    assert train[ID].tolist() == df[ID].tolist()  # "000...0" kept verbatim
    assert all(train[c].dtype == np.int64 for c in TRAIN_COLUMNS[1:])
    assert train[TARGET].tolist() == df[TARGET].tolist()

    test = read_table(_write(tmp_path, df.drop(columns=TARGET), "test.csv"), "test", TASK)
    assert tuple(test.columns) == TEST_COLUMNS


def test_float_integers_are_accepted(tmp_path: Path) -> None:
    df = _train_frame()
    df[TARGET] = df[TARGET].astype(float)
    df["Eyes"] = df["Eyes"].astype(float)
    train = read_table(_write(tmp_path, df), "train", TASK)
    assert train[TARGET].dtype == np.int64 and train["Eyes"].dtype == np.int64


def test_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, _train_frame())
    path.write_text(path.read_text() + "\n\n")
    assert len(read_table(path, "train", TASK)) == 6


def test_missing_file(tmp_path: Path) -> None:
    msg = _error(tmp_path / "train.csv")
    assert "train.csv" in msg and "file not found" in msg


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("")
    assert "train.csv" in _error(path) and "empty" in _error(path)


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(",".join(TRAIN_COLUMNS) + "\n")
    assert "no data rows" in _error(path)


def test_unparseable_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, _train_frame())
    path.write_text(path.read_text() + "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n")
    msg = _error(path)
    assert "train.csv" in msg and "not a readable CSV" in msg


def test_missing_column(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, _train_frame().drop(columns="Eyes")))
    assert "train.csv" in msg and "missing column 'Eyes'" in msg


def test_extra_column(tmp_path: Path) -> None:
    df = _train_frame()
    df["Breed"] = 1
    msg = _error(_write(tmp_path, df))
    assert "train.csv" in msg and "unexpected column 'Breed'" in msg


def test_target_in_test_file_is_an_error(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, _train_frame(), "test.csv"), "test")
    assert "test.csv" in msg and f"unexpected column '{TARGET}'" in msg and "no target" in msg


def test_wrong_order(tmp_path: Path) -> None:
    df = _train_frame()
    cols = list(TRAIN_COLUMNS)
    cols[2], cols[3] = cols[3], cols[2]
    msg = _error(_write(tmp_path, df[cols]))
    assert "wrong order" in msg and "column 3 is 'Face', expected 'Eyes'" in msg


def test_duplicate_id_names_both_rows(tmp_path: Path) -> None:
    df = _train_frame()
    df.loc[4, ID] = df.loc[1, ID]
    msg = _error(_write(tmp_path, df))
    assert "train.csv" in msg and "duplicate Id" in msg
    assert "row 5 (line 6), column 'Id'" in msg and "row 2 (line 3)" in msg


@pytest.mark.parametrize("bad_id", ["a b", "../etc", "sub/dir", "a\\b"])
def test_id_that_is_not_a_file_name(tmp_path: Path, bad_id: str) -> None:
    df = _train_frame()
    df.loc[2, ID] = bad_id
    msg = _error(_write(tmp_path, df))
    assert "row 3 (line 4), column 'Id'" in msg and "path separator" in msg


def test_empty_id(tmp_path: Path) -> None:
    df = _train_frame()
    df.loc[0, ID] = ""
    assert "row 1 (line 2), column 'Id': empty Id" in _error(_write(tmp_path, df))


def test_non_hex_id_is_allowed(tmp_path: Path) -> None:
    df = _train_frame()
    df.loc[0, ID] = "My_Cat-01"
    assert read_table(_write(tmp_path, df), "train", TASK)[ID][0] == "My_Cat-01"


def test_metadata_value_two(tmp_path: Path) -> None:
    df = _train_frame()
    df.loc[2, "Eyes"] = 2
    msg = _error(_write(tmp_path, df))
    assert "train.csv" in msg and "column 'Eyes' holds 1 value that is not 0 or 1 (row 3 (line 4): '2')" in msg


def test_real_valued_metadata_is_one_problem_naming_the_task_key(tmp_path: Path) -> None:
    # Every row of a real-valued column fails the 0/1 check: one line saying which key allows it, not a
    # line per row that names no key.
    df = _train_frame(40)
    df["Eyes"] = (12.02 + np.arange(40) * 0.5).round(2)
    msg = _error(_write(tmp_path, df))
    assert "\n" not in msg and msg.count("row ") == 5
    assert msg.startswith(f"{tmp_path / 'train.csv'}: column 'Eyes' holds 40 values that are not 0 or 1 "
                          "(row 1 (line 2): '12.02', row 2 (line 3): '12.52', ")
    assert "... (35 more)); task.metadata_binary is true (the default for Pawpularity): set " \
           "`task.metadata_binary: false` in the config's task section if this column holds real numbers" in msg


def test_several_real_valued_metadata_columns_and_other_problems(tmp_path: Path) -> None:
    df = _train_frame(8).astype({"Eyes": object, "Blur": object, TARGET: object})
    df["Eyes"] = "3.5"
    df.loc[6, "Blur"] = "-1"
    df.loc[2, "Blur"] = "abc"  # not a number at all: its own line, as before
    df.loc[4, TARGET] = 0
    lines = _error(_write(tmp_path, df)).splitlines()
    assert lines[0].endswith("train.csv: 3 problems:") and len(lines) == 4
    assert lines[1].startswith("  metadata columns 'Eyes', 'Blur' hold 9 values that are not 0 or 1 (row 1 (line 2), "
                               "column 'Eyes': '3.5', ")
    assert "these columns hold real numbers" in lines[1]
    assert lines[2] == "  row 3 (line 4), column 'Blur': value 'abc' is not a finite number (expected 0 or 1)"
    assert "row 5 (line 6), column 'Pawpularity'" in lines[3]


def test_real_valued_metadata_reads_when_the_task_says_so(tmp_path: Path) -> None:
    df = _train_frame()
    df["Eyes"] = [0.5, 12.02, -3.0, 0.0, 1.0, 7.25]
    task = dataclasses.replace(TASK, metadata_binary=False)
    train = read_table(_write(tmp_path, df), "train", task)
    assert train["Eyes"].dtype == np.float64 and train["Eyes"].tolist() == df["Eyes"].tolist()
    assert train["Blur"].dtype == np.float64


def test_metadata_nan(tmp_path: Path) -> None:
    df = _train_frame().astype({"Blur": float})
    df.loc[0, "Blur"] = np.nan
    msg = _error(_write(tmp_path, df))
    assert "row 1 (line 2), column 'Blur': missing value" in msg


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "1..100"),
        (101, "1..100"),
        (37.5, "not an integer"),
        ("abc", "not a finite number"),
        ("", "missing"),
    ],
)
def test_bad_target(tmp_path: Path, value: object, words: str) -> None:
    df = _train_frame().astype({TARGET: object})
    df.loc[3, TARGET] = value
    msg = _error(_write(tmp_path, df))
    assert "train.csv" in msg and f"row 4 (line 5), column '{TARGET}'" in msg and words in msg


def test_many_problems_are_listed_then_counted(tmp_path: Path) -> None:
    df = _train_frame(10)
    df[TARGET] = 107
    msg = _error(_write(tmp_path, df))
    assert msg.startswith(f"{tmp_path / 'train.csv'}: 10 problems:")
    assert "row 5 (line 6)" in msg and "row 6 (line 7)" not in msg
    assert "... and 5 more" in msg


def test_problems_are_sorted_by_row(tmp_path: Path) -> None:
    df = _train_frame().astype({TARGET: object})
    df.loc[1, TARGET] = 500
    df.loc[4, "Eyes"] = 3
    msg = _error(_write(tmp_path, df))
    assert msg.index("row 2 (line 3)") < msg.index("row 5 (line 6)")


def _write_images(folder: Path, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        (folder / f"{image_id}.jpg").write_bytes(b"\xff\xd8\xff\xd9")


def test_check_images_returns_paths_in_row_order(tmp_path: Path) -> None:
    df = _train_frame()
    _write_images(tmp_path / "train", df[ID].tolist())
    paths = check_images(df, tmp_path, "train", "train.csv", TASK)
    assert paths == [str(tmp_path / "train" / f"{i}.jpg") for i in df[ID]]


def test_check_images_missing_and_empty(tmp_path: Path) -> None:
    df = _train_frame()
    _write_images(tmp_path / "train", df[ID].tolist())
    (tmp_path / "train" / f"{df[ID][2]}.jpg").unlink()
    (tmp_path / "train" / f"{df[ID][4]}.jpg").write_bytes(b"")
    with pytest.raises(SchemaError) as info:
        check_images(df, tmp_path, "train", tmp_path / "train.csv", TASK)
    msg = str(info.value)
    assert "train.csv" in msg and "2 problems" in msg
    assert f"row 3 (line 4), Id '{df[ID][2]}'" in msg and "not found" in msg
    assert str(tmp_path / "train" / f"{df[ID][2]}.jpg") in msg
    assert f"row 5 (line 6), Id '{df[ID][4]}'" in msg and "empty" in msg


def test_check_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="image directory .* not found"):
        check_images(_train_frame(), tmp_path / "nope", "train", "train.csv", TASK)


def test_validate_dataset(tmp_path: Path) -> None:
    train = _train_frame()
    test = _train_frame(3).drop(columns=TARGET)
    test[ID] = [f"t{i}" for i in range(3)]
    _write(tmp_path, train)
    _write(tmp_path, test, "test.csv")
    _write_images(tmp_path / "train", train[ID].tolist())
    _write_images(tmp_path / "test", test[ID].tolist()[:2])
    with pytest.raises(SchemaError, match=r"test\.csv.*row 3 \(line 4\), Id 't2'"):
        validate_dataset(tmp_path, TASK)
    _write_images(tmp_path / "test", ["t2"])
    got_train, got_test = validate_dataset(tmp_path, TASK)
    assert len(got_train) == 6 and len(got_test) == 3
