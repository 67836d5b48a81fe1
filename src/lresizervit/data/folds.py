"""Stratified K-fold split of train.csv, written once to ``folds/train_folds.csv`` and read back.

Training only reads the folds file: the number of folds always comes from it, never from a literal.
Groups of duplicate photos (data/duplicates.py) can be kept in one fold each; the file then records them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.data.schema import SchemaError, read_table
from lresizervit.io_utils import atomic_write_csv
from lresizervit.task import FOLD, GROUP, Task


def sturges_bins(n: int) -> int:
    """Sturges' rule: the number of histogram bins for ``n`` samples."""
    if n < 1:
        raise ValueError(f"Sturges' rule needs at least 1 sample, got {n}")
    return int(np.floor(1 + np.log2(n)))


def target_bins(target: pd.Series | np.ndarray, n_folds: int) -> np.ndarray:
    """Equal-width bins of the target to stratify on, as many as Sturges allows.

    StratifiedKFold warns when a class has fewer members than folds (and fails when every class has),
    so the bin count drops until each non-empty bin holds at least ``n_folds`` rows. On the real
    9,912 rows this keeps Sturges' 14 bins; a tiny hand-made data set still splits without warnings.
    """
    values = np.asarray(target, dtype="float64")
    for nbins in range(sturges_bins(len(values)), 0, -1):
        bins = pd.cut(values, bins=nbins, labels=False)
        counts = np.bincount(bins)
        if counts[counts > 0].min() >= n_folds:
            return bins
    raise AssertionError("unreachable: one bin holds every row and n_folds <= rows")  # pragma: no cover


def make_folds(train_df: pd.DataFrame, n_folds: int, seed: int, task: Task,
               groups: np.ndarray | None = None) -> pd.DataFrame:
    """Copy of ``train_df`` (row order kept) with an int ``kfold`` column in 0..n_folds-1.

    With ``groups`` (one label per row, -1 = a row of its own; duplicates.duplicate_groups), the rows of a
    group land in one fold and a ``group`` column records the labels. Each group is split as one unit with
    its mean target: so a data set without duplicates gets exactly the folds it gets without ``groups``
    (sklearn's StratifiedGroupKFold, a greedy pass, gives other folds even when no row shares a group).
    Folds then hold the same number of units within one; in rows they differ by where the groups' extra
    rows fell (a few dozen pairs among the real 9,912 rows: a few rows per fold).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise ValueError(f"n_folds must be an integer, got {n_folds!r}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_folds > len(train_df):
        raise ValueError(f"n_folds={n_folds} is more than the {len(train_df)} training rows")
    TARGET = task.target_column
    if TARGET not in train_df.columns:
        raise ValueError(f"the training frame has no {TARGET!r} column to stratify on")
    target = train_df[TARGET]
    if target.isna().any():
        raise ValueError(f"{TARGET!r} has missing values; read the data with schema.read_table first")

    unit = np.arange(len(train_df))
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (len(train_df),):
            raise ValueError(f"{len(groups)} group labels for {len(train_df)} rows")
        unit = _units(groups)
    n_units = int(unit.max()) + 1
    if n_folds > n_units:
        raise ValueError(f"n_folds={n_folds} is more than the {n_units} groups of duplicate photos and "
                         "single photos: fewer folds, or data.group_duplicates: false")
    unit_target = np.bincount(unit, weights=target.to_numpy(np.float64)) / np.bincount(unit)
    bins = target_bins(unit_target, int(n_folds))
    unit_fold = np.full(n_units, -1, dtype="int64")
    # Imported here: every command reads the folds file, only this one needs scikit-learn (~2 s to import).
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    for fold, (_, val_idx) in enumerate(skf.split(np.zeros(len(bins)), bins)):
        unit_fold[val_idx] = fold
    out = train_df.drop(columns=[FOLD, GROUP], errors="ignore").copy()
    out[FOLD] = unit_fold[unit]
    if groups is not None:
        out[GROUP] = groups
    return out


def _units(groups: np.ndarray) -> np.ndarray:
    """0..U-1 per row, numbered in row order: the rows of one group share a unit, every other row has its own."""
    unit = np.empty(len(groups), dtype=np.int64)
    of_group: dict[int, int] = {}
    n = 0
    for i, g in enumerate(groups.tolist()):
        if g >= 0 and g in of_group:
            unit[i] = of_group[g]
            continue
        if g >= 0:
            of_group[g] = n
        unit[i] = n
        n += 1
    return unit


def write_folds(df: pd.DataFrame, out_csv: str | os.PathLike[str], task: Task) -> Path:
    """Write the folds file atomically: readers see the old file or the whole new one, never half."""
    FOLD_COLUMNS = task.columns("folds")
    columns = list(df.columns)
    if GROUP in columns:
        FOLD_COLUMNS = (*FOLD_COLUMNS, GROUP)
    if columns != list(FOLD_COLUMNS):
        missing = [c for c in FOLD_COLUMNS if c not in columns]
        extra = [c for c in columns if c not in FOLD_COLUMNS]
        raise ValueError(
            f"a folds frame needs exactly the columns {list(FOLD_COLUMNS)}; "
            f"missing {missing}, unexpected {extra}" + ("" if missing or extra else ", wrong order")
        )
    return atomic_write_csv(out_csv, df)


def read_folds(path: str | os.PathLike[str], task: Task) -> tuple[pd.DataFrame, int]:
    """Read and validate a folds file; return the frame and its number of folds K (= max kfold + 1).

    Folds must be exactly 0..K-1 with none empty and K >= 2, and each group of duplicate photos (the
    optional ``group`` column) must lie in one fold, or :class:`SchemaError` names what is off.
    """
    df = read_table(path, "folds", task)
    present = sorted(int(k) for k in df[FOLD].unique())
    n_folds = present[-1] + 1
    empty = sorted(set(range(n_folds)) - set(present))
    if empty:
        raise SchemaError.from_problems(
            path,
            [
                f"column {FOLD!r}: folds must be 0..K-1 with none empty; found {present}, "
                f"so fold{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
                f"of 0..{n_folds - 1} {'are' if len(empty) > 1 else 'is'} empty"
            ],
        )
    if n_folds < 2:
        raise SchemaError.from_problems(
            path, [f"column {FOLD!r}: every row is in fold 0; cross-validation needs at least 2 folds"]
        )
    if GROUP in df.columns:
        grouped = df[df[GROUP] >= 0]
        spread = grouped.groupby(GROUP)[FOLD].nunique()
        problems = []
        for g in spread.index[spread > 1]:
            rows = np.flatnonzero((df[GROUP] == g).to_numpy())
            problems.append(f"column {GROUP!r}: group {g} spans folds "
                            f"{sorted(set(df[FOLD].iloc[rows].tolist()))} (rows {', '.join(str(r + 1) for r in rows)}); "
                            "duplicate photos must share a fold")
        if problems:
            raise SchemaError.from_problems(path, problems)
    return df, n_folds


def folds_fingerprint(train_csv: str | os.PathLike[str], n_folds: int, fold_seed: int,
                      group_duplicates: bool = False, merge_duplicates: bool = False) -> dict:
    """What a folds file was made from (K, the seed, train.csv's hash, how duplicate photos were treated and
    by which rule): written beside it as `.json`, so a folds file is never reused for another data set or
    other settings."""
    import hashlib

    from lresizervit.data.duplicates import RULE

    train_csv = Path(train_csv)
    digest = hashlib.sha1(train_csv.read_bytes()).hexdigest() if train_csv.is_file() else None
    return {"n_folds": n_folds, "fold_seed": fold_seed, "train_csv_sha1": digest,
            "group_duplicates": group_duplicates, "merge_duplicates": merge_duplicates,
            "duplicate_rule": RULE if group_duplicates or merge_duplicates else None}


def sidecar_path(folds_csv: str | os.PathLike[str]) -> Path:
    return Path(folds_csv).with_suffix(".json")


def stale_folds_reasons(folds_csv: str | os.PathLike[str], now: dict) -> list[str]:
    """Why an existing folds file does not match `now` (a `folds_fingerprint`); [] when it does or when it
    has no sidecar (made before sidecars existed). A key the sidecar lacks (made before the key existed) is
    not a reason: see `keys_missing_from_sidecar`."""
    import json

    sidecar = sidecar_path(folds_csv)
    if not sidecar.is_file():
        return []
    made = json.loads(sidecar.read_text())
    return [f"{key}: {made[key]!r} in the file, {now[key]!r} now" for key in now
            if key in made and made[key] != now[key]]


def keys_missing_from_sidecar(folds_csv: str | os.PathLike[str], now: dict) -> list[str]:
    """The keys of `now` that an existing sidecar does not record (it predates them)."""
    import json

    sidecar = sidecar_path(folds_csv)
    if not sidecar.is_file():
        return []
    made = json.loads(sidecar.read_text())
    return [key for key in now if key not in made]
