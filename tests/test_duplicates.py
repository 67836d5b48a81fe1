"""Duplicate photos: copies (exact, re-encoded, resized) are found and grouped, distinct photos are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lresizervit.data.decode import decode_image
from lresizervit.data.duplicates import (
    MAX_HAMMING,
    NO_GROUP,
    THUMB_SIDE,
    duplicate_groups,
    fingerprint,
    group_summary,
    is_duplicate,
    merge_duplicates,
)
from lresizervit.data.synth import SynthParams, generate
from tests.facts import ID, META_COLUMNS, TARGET, TASK
from tests.photos import encode, photo, resized, write

# The copies a data set holds of one photo (PIL writes them, as a user's tools would).
COPIES = {
    "exact": lambda im: encode(im, quality=90),
    "jpeg quality 30": lambda im: encode(im, quality=30),
    "png": lambda im: encode(im, "PNG"),
    "half size": lambda im: encode(resized(im, 0.5), quality=90),
    "quarter size": lambda im: encode(resized(im, 0.25), quality=75),
    "1.5x size": lambda im: encode(resized(im, 1.5), quality=85),
}


def _fp(path: Path) -> tuple[int, bytes]:
    return fingerprint(decode_image(path, THUMB_SIDE))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> list[tuple[np.ndarray, tuple[int, bytes]]]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    out = []
    for seed in range(12):
        image = photo(seed, int(rng.integers(400, 1281)), int(rng.integers(400, 1281)))
        out.append((image, _fp(write(folder / f"{seed}.jpg", encode(image, quality=90)))))
    return out


@pytest.mark.parametrize("kind", list(COPIES))
def test_every_kind_of_copy_is_a_duplicate(originals, tmp_path: Path, kind: str) -> None:
    for i, (image, original) in enumerate(originals):
        copy = _fp(write(tmp_path / f"{i}.img", COPIES[kind](image)))
        assert is_duplicate(original, copy), (kind, i)
        # The copies sit well inside the hash threshold, not on its edge.
        assert bin(original[0] ^ copy[0]).count("1") <= MAX_HAMMING - 4


def test_distinct_photos_are_not_duplicates(originals) -> None:
    fps = [fp for _, fp in originals]
    for i in range(len(fps)):
        for j in range(i + 1, len(fps)):
            assert not is_duplicate(fps[i], fps[j]), (i, j)
    assert (duplicate_groups([h for h, _ in fps], [s for _, s in fps]) == NO_GROUP).all()


def test_synthetic_look_alikes_are_not_duplicates(tmp_path: Path) -> None:
    """The synthetic set's photos share one layout at low contrast, where a hash alone sees copies."""
    generate(tmp_path, 150, 1, SynthParams(seed=0, min_side=96, max_side=160, max_long_side=200), workers=1)
    train = pd.read_csv(tmp_path / "train.csv", dtype={ID: str})
    fps = [_fp(tmp_path / "train" / f"{i}.jpg") for i in train[ID]]
    hashes = np.array([h for h, _ in fps], dtype=np.uint64)
    close = np.triu(np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= MAX_HAMMING, 1).sum()
    assert close > 0  # the signature is what tells these apart
    assert (duplicate_groups(hashes.tolist(), [s for _, s in fps]) == NO_GROUP).all()


def test_groups_are_transitive_and_numbered_by_first_row(originals, tmp_path: Path) -> None:
    (a, fa), (b, fb) = originals[0], originals[1]
    half_a = _fp(write(tmp_path / "a.jpg", COPIES["half size"](a)))
    png_b = _fp(write(tmp_path / "b.png", COPIES["png"](b)))
    # Rows: b, a, a's half-size copy, another photo, b's PNG copy, a's half-size copy again.
    rows = [fb, fa, half_a, originals[2][1], png_b, half_a]
    groups = duplicate_groups([h for h, _ in rows], [s for _, s in rows])
    assert groups.tolist() == [0, 1, 1, NO_GROUP, 0, 1]


def _frame(targets: list[int]) -> pd.DataFrame:
    df = pd.DataFrame({ID: [f"id{i}" for i in range(len(targets))]})
    for col in META_COLUMNS:
        df[col] = np.arange(len(targets)) % 2
    df[TARGET] = targets
    return df


def test_summary_counts_groups_rows_and_target_spread() -> None:
    df = _frame([10, 50, 12, 30, 31, 90])
    s = group_summary(df, np.array([0, 1, 0, NO_GROUP, 1, 1]), TASK)
    assert (s["groups"], s["rows"], s["max_spread"]) == (2, 5, 59.0)
    assert s["largest_spreads"][0] == {"spread": 59.0, "ids": ["id1", "id4", "id5"], "targets": [50, 31, 90]}
    assert group_summary(df, np.full(6, NO_GROUP), TASK)["groups"] == 0


def test_merge_keeps_the_first_row_with_the_rounded_mean_target() -> None:
    df = _frame([10, 50, 13, 30, 31, 90])
    merged, groups = merge_duplicates(df, np.array([0, 1, 0, NO_GROUP, 1, 1]), TASK)
    assert merged[ID].tolist() == ["id0", "id1", "id3"]
    # (10 + 13) / 2 = 11.5 rounds up; (50 + 31 + 90) / 3 = 57.
    assert merged[TARGET].tolist() == [12, 57, 30] and merged[TARGET].dtype == df[TARGET].dtype
    assert groups.tolist() == [0, 1, NO_GROUP]
    assert merged.loc[1, "Eyes"] == df.loc[1, "Eyes"]  # the first row's metadata
