"""Stratified folds: deterministic, balanced, stratified, written atomically, K read from the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from lresizervit.data.folds import make_folds, read_folds, sturges_bins, write_folds
from lresizervit.data.schema import SchemaError
from lresizervit.task import GROUP
from tests.facts import FOLD, FOLD_COLUMNS, ID, META_COLUMNS, TARGET, TASK


def _train_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({ID: [f"{i:032x}" for i in range(n)]})
    for col in META_COLUMNS:
        df[col] = rng.integers(0, 2, n)
    # Skewed like Pawpularity: most scores low, a pile-up at 100.
    target = np.clip(np.round(rng.gamma(2.0, 18.0, n)), 1, 100).astype(int)
    target[rng.random(n) < 0.03] = 100
    df[TARGET] = target
    return df


def test_sturges_bins() -> None:
    assert [sturges_bins(n) for n in (1, 2, 3, 8, 1000, 9912)] == [1, 2, 2, 4, 10, 14]
    with pytest.raises(ValueError):
        sturges_bins(0)


def test_deterministic_per_seed() -> None:
    df = _train_frame(200)
    a = make_folds(df, 5, seed=42, task=TASK)[FOLD]
    b = make_folds(df, 5, seed=42, task=TASK)[FOLD]
    c = make_folds(df, 5, seed=7, task=TASK)[FOLD]
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_copy_keeps_rows_and_adds_int_kfold() -> None:
    df = _train_frame(50)
    out = make_folds(df, 5, seed=0, task=TASK)
    assert FOLD not in df.columns
    assert list(out.columns) == list(FOLD_COLUMNS)
    assert out[FOLD].dtype == np.int64
    pd.testing.assert_frame_equal(out.drop(columns=FOLD), df)


@pytest.mark.parametrize(("n", "k"), [(1000, 5), (1003, 10), (37, 4)])
def test_fold_sizes_within_one_of_n_over_k(n: int, k: int) -> None:
    counts = make_folds(_train_frame(n), k, seed=0, task=TASK)[FOLD].value_counts()
    assert sorted(counts.index) == list(range(k))
    assert (abs(counts - n / k) <= 1).all()


def test_stratified_fold_means_are_tighter_than_plain_kfold() -> None:
    df = _train_frame(1000)
    overall = df[TARGET].mean()
    strat = make_folds(df, 5, seed=0, task=TASK)
    strat_dev = (strat.groupby(FOLD)[TARGET].mean() - overall).abs().max()

    plain_devs = []
    for seed in range(10):
        kfold = np.zeros(len(df), dtype=int)
        for fold, (_, idx) in enumerate(KFold(5, shuffle=True, random_state=seed).split(df)):
            kfold[idx] = fold
        plain_devs.append((df[TARGET].groupby(kfold).mean() - overall).abs().max())
    assert strat_dev < 1.0
    assert strat_dev < np.median(plain_devs)


def test_tiny_data_set_splits_without_warnings() -> None:
    df = _train_frame(12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = make_folds(df, 4, seed=0, task=TASK)
    assert sorted(out[FOLD].value_counts().tolist()) == [3, 3, 3, 3]


@pytest.mark.parametrize("k", [1, 0, 13])
def test_bad_fold_count(k: int) -> None:
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(_train_frame(12), k, seed=0, task=TASK)


def test_write_then_read_gives_k_from_the_file(tmp_path: Path) -> None:
    df = make_folds(_train_frame(60), 7, seed=1, task=TASK)
    out = tmp_path / "folds" / "nested" / "train_folds.csv"
    assert write_folds(df, out, TASK) == out
    back, k = read_folds(out, TASK)
    assert k == 7
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back[ID][0] == "0" * 32
    assert [p.name for p in out.parent.iterdir()] == ["train_folds.csv"]  # no temp file left


def test_write_replaces_and_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "train_folds.csv"
    write_folds(make_folds(_train_frame(20), 2, seed=0, task=TASK), out, TASK)
    before = out.read_text()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("lresizervit.data.folds.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_folds(make_folds(_train_frame(20), 4, seed=0, task=TASK), out, TASK)
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train_folds.csv"]


def test_write_rejects_wrong_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kfold"):
        write_folds(_train_frame(10), tmp_path / "f.csv", TASK)


def test_read_rejects_non_contiguous_folds(tmp_path: Path) -> None:
    df = make_folds(_train_frame(30), 3, seed=0, task=TASK)
    df[FOLD] = df[FOLD].replace({1: 4})
    path = tmp_path / "train_folds.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SchemaError) as info:
        read_folds(path, TASK)
    msg = str(info.value)
    assert "train_folds.csv" in msg and "'kfold'" in msg and "0..K-1" in msg
    assert "folds 1, 3 of 0..4 are empty" in msg


def test_read_rejects_a_single_fold(tmp_path: Path) -> None:
    df = make_folds(_train_frame(30), 3, seed=0, task=TASK)
    df[FOLD] = 0
    path = tmp_path / "train_folds.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SchemaError, match="at least 2 folds"):
        read_folds(path, TASK)


def test_read_rejects_missing_kfold_column(tmp_path: Path) -> None:
    path = tmp_path / "train_folds.csv"
    _train_frame(10).to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"train_folds\.csv: missing column 'kfold'"):
        read_folds(path, TASK)


@pytest.mark.parametrize(("value", "words"), [(-1, "integer >= 0"), (1.5, "not an integer"), ("", "missing")])
def test_read_rejects_bad_kfold_values(tmp_path: Path, value: object, words: str) -> None:
    df = make_folds(_train_frame(10), 2, seed=0, task=TASK).astype({FOLD: object})
    df.loc[6, FOLD] = value
    path = tmp_path / "train_folds.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SchemaError) as info:
        read_folds(path, TASK)
    assert "row 7 (line 8), column 'kfold'" in str(info.value) and words in str(info.value)


def test_read_validates_train_columns_too(tmp_path: Path) -> None:
    df = make_folds(_train_frame(10), 2, seed=0, task=TASK)
    df.loc[1, TARGET] = 0
    path = tmp_path / "train_folds.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"row 2 \(line 3\), column 'Pawpularity'"):
        read_folds(path, TASK)


def _groups(n: int, members: list[list[int]]) -> np.ndarray:
    groups = np.full(n, -1)
    for g, rows in enumerate(members):
        groups[rows] = g
    return groups


def test_without_duplicates_groups_change_nothing_but_the_recorded_column() -> None:
    df = _train_frame(200)
    plain = make_folds(df, 5, seed=42, task=TASK)
    grouped = make_folds(df, 5, seed=42, task=TASK, groups=np.full(200, -1))
    assert grouped[FOLD].tolist() == plain[FOLD].tolist()
    assert list(grouped.columns) == [*FOLD_COLUMNS, GROUP] and (grouped[GROUP] == -1).all()


def test_each_group_lands_in_one_fold_and_folds_stay_balanced() -> None:
    df = _train_frame(300)
    members = [[0, 150, 299], [1, 2], [10, 20, 30, 40], *[[i, i + 100] for i in range(50, 90)]]
    groups = _groups(300, members)
    out = make_folds(df, 5, seed=0, task=TASK, groups=groups)
    for rows in members:
        assert out[FOLD].iloc[rows].nunique() == 1, rows
    assert out[GROUP].tolist() == groups.tolist()
    sizes = out[FOLD].value_counts()
    # Folds hold the same number of units (groups and single rows) within one; rows differ by where the
    # groups' extra rows fell: 43 groups hold 48 extra rows here.
    assert (abs(sizes - 60) <= 6).all()
    assert make_folds(df, 5, seed=0, task=TASK, groups=groups)[FOLD].tolist() == out[FOLD].tolist()


def test_more_folds_than_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="n_folds=3 is more than the 2 groups"):
        make_folds(_train_frame(6), 3, seed=0, task=TASK, groups=np.array([0, 0, 0, 1, 1, 1]))


def test_group_column_round_trips_and_old_files_without_it_still_read(tmp_path: Path) -> None:
    df = make_folds(_train_frame(40), 4, seed=1, task=TASK, groups=_groups(40, [[0, 1], [5, 9, 33]]))
    path = write_folds(df, tmp_path / "train_folds.csv", TASK)
    back, k = read_folds(path, TASK)
    assert k == 4 and back[GROUP].tolist() == df[GROUP].tolist()
    old = make_folds(_train_frame(40), 4, seed=1, task=TASK)
    back, _ = read_folds(write_folds(old, tmp_path / "old.csv", TASK), TASK)
    assert GROUP not in back.columns


def test_read_rejects_a_group_split_over_folds(tmp_path: Path) -> None:
    df = make_folds(_train_frame(40), 4, seed=1, task=TASK, groups=_groups(40, [[0, 1], [5, 9, 33]]))
    df.loc[9, FOLD] = (df.loc[5, FOLD] + 1) % 4
    path = tmp_path / "train_folds.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"group 1 spans folds .* \(rows 6, 10, 34\)"):
        read_folds(path, TASK)
