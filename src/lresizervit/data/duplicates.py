"""Duplicate photos: the same picture stored under several Ids (re-encoded, resized), found by a perceptual hash.

Each photo gets a fingerprint from a 32 x 32 grey thumbnail: a 64-bit DCT hash (the signs of its 8 x 8
lowest frequencies against their median) and an 8 x 8 mean-grey signature. Two photos are duplicates when
their hashes differ in at most :data:`MAX_HAMMING` bits AND their signatures differ (RMS) by at most
:data:`SIGNATURE_FLOOR` grey levels plus :data:`MAX_RELATIVE_RMS` times the signatures' own spread. The hash is
the cheap index over all pairs; the signature confirms, because a hash alone cannot tell apart low-contrast
photos of one layout (a pet in the middle of a plain background, as in the synthetic demo set: most
low-frequency coefficients are near zero there, so their signs are noise). Measured on 60 photo-like images
of 400-1280 px (tests/test_duplicates.py builds such images): re-encoded (JPEG quality 30..90, PNG) and
resized (1/4x..1.5x) copies differ by <= 6 bits and <= 0.09 spreads beyond the floor; 300 distinct ones by
>= 14 bits; the demo's 1,500 synthetic photos (one seed), distinct but alike, by >= 0.19 spreads among the
pairs the hash lets through.
Duplicates are joined transitively (union-find): a, b and c form one group when a~b and b~c.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd

from lresizervit.task import GROUP, Task

__all__ = ["MAX_HAMMING", "MAX_RELATIVE_RMS", "NO_GROUP", "RULE", "SIGNATURE_FLOOR", "duplicate_groups",
           "fingerprint", "group_summary", "is_duplicate", "merge_duplicates"]

# Side of the grey thumbnail the hash's DCT runs on, and of the hash's low-frequency block (8 x 8 = 64 bits).
THUMB_SIDE = 32
HASH_SIDE = 8
SIGNATURE_SIDE = 8
# Copies: <= 6 bits (see above); distinct photo-like images: >= 14. The margin sits on the copies' side.
MAX_HAMMING = 10
# Grey levels (0..255) of RMS difference any two signatures may have: JPEG and rounding noise, which is all
# that tells two copies of a flat photo (std ~0) apart.
SIGNATURE_FLOOR = 1.0
# Beyond the floor, in units of the signatures' spread (RMS of their two standard deviations): copies
# <= 0.09, the demo's distinct look-alikes >= 0.19.
MAX_RELATIVE_RMS = 0.15
# Names the rule in caches and in the folds file's sidecar: a change of any constant above changes it.
RULE = (f"dct{HASH_SIDE}x{HASH_SIDE}@{THUMB_SIDE}<={MAX_HAMMING}"
        f"+mean{SIGNATURE_SIDE}rms<={SIGNATURE_FLOOR}+{MAX_RELATIVE_RMS}sd")
# The group of a row with no duplicate, in the folds file's group column.
NO_GROUP = -1


def fingerprint(rgb: np.ndarray) -> tuple[int, bytes]:
    """(64-bit hash, 64-byte signature) of an RGB uint8 photo of any size."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    # INTER_AREA averages every source pixel: resampling noise (and JPEG noise) averages out.
    thumb = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    coeffs = cv2.dct(thumb)[:HASH_SIDE, :HASH_SIDE].ravel()
    # The median of the AC terms only: the DC term (mean brightness) is far above all of them.
    bits = coeffs > np.median(coeffs[1:])
    phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    signature = cv2.resize(thumb, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    return phash, np.clip(np.rint(signature), 0, 255).astype(np.uint8).tobytes()


def duplicate_groups(hashes: Sequence[int], signatures: Sequence[bytes]) -> np.ndarray:
    """Group label of every photo: :data:`NO_GROUP` for a photo with no duplicate, else 0..G-1, numbered in
    the order of each group's first photo (so the labels depend only on the photos and their order)."""
    n = len(hashes)
    if len(signatures) != n:
        raise ValueError(f"{n} hashes but {len(signatures)} signatures")
    labels = np.full(n, NO_GROUP, dtype=np.int64)
    if n < 2:
        return labels
    h = np.array([int(x) for x in hashes], dtype=np.uint64)
    sig = np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(n, -1).astype(np.float32)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    # Row blocks keep the XOR matrix at block x n (64 MB for 10,000 photos) instead of n x n.
    block = max(1, 2**23 // n)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        dist = np.bitwise_count(h[rows, None] ^ h[None, :])
        i, j = np.nonzero(dist <= MAX_HAMMING)
        keep = j > rows[i]  # each unordered pair once, never a photo with itself
        i, j = rows[i[keep]], j[keep]
        same = _signatures_match(sig[i], sig[j])
        for a, b in zip(i[same].tolist(), j[same].tolist(), strict=True):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    next_label: dict[int, int] = {}
    for i in range(n):
        r = int(roots[i])
        if sizes[r] > 1:
            labels[i] = next_label.setdefault(r, len(next_label))
    return labels


def is_duplicate(a: tuple[int, bytes], b: tuple[int, bytes]) -> bool:
    """Whether two fingerprints are of the same photo (the rule of :func:`duplicate_groups`, for one pair)."""
    if bin(int(a[0]) ^ int(b[0])).count("1") > MAX_HAMMING:
        return False
    sa, sb = (np.frombuffer(s, dtype=np.uint8).astype(np.float32)[None] for s in (a[1], b[1]))
    return bool(_signatures_match(sa, sb)[0])


def _signatures_match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: RMS difference <= floor + MAX_RELATIVE_RMS * spread, for float [n, 64] signatures."""
    rms = np.sqrt(np.mean((a - b) ** 2, axis=1))
    spread = np.sqrt((a.var(axis=1) + b.var(axis=1)) / 2)
    return rms <= SIGNATURE_FLOOR + MAX_RELATIVE_RMS * spread


def group_summary(df: pd.DataFrame, groups: np.ndarray, task: Task) -> dict:
    """How many groups, how many rows they hold, and how far the targets inside a group differ."""
    groups = np.asarray(groups)
    inside = groups != NO_GROUP
    out: dict = {"groups": int(len(np.unique(groups[inside]))), "rows": int(inside.sum()), "max_spread": 0.0,
                 "largest_spreads": []}
    if not inside.any():
        return out
    frame = pd.DataFrame({"id": df[task.id_column].astype(str).to_numpy()[inside],
                          "y": df[task.target_column].to_numpy(np.float64)[inside], "group": groups[inside]})
    per_group = [(float(g["y"].max() - g["y"].min()), g["id"].tolist(), g["y"].tolist())
                 for _, g in frame.groupby("group", sort=True)]
    per_group.sort(key=lambda t: -t[0])  # stable: ties keep the groups' order
    out["max_spread"] = per_group[0][0]
    out["largest_spreads"] = [{"spread": s, "ids": ids, "targets": ys} for s, ids, ys in per_group[:5]]
    return out


def merge_duplicates(df: pd.DataFrame, groups: np.ndarray, task: Task) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per group: the group's first row (its Id, image and metadata) with the group's mean target.

    With an integer target the mean is rounded half-up (the folds file keeps train.csv's types); that moves
    it by at most 0.5. Returns the frame (row order kept, index reset) and the kept rows' group labels.
    """
    groups = np.asarray(groups)
    if len(groups) != len(df):
        raise ValueError(f"{len(groups)} group labels for {len(df)} rows")
    target = task.target_column
    out = df.drop(columns=GROUP, errors="ignore").copy()
    keep = np.ones(len(df), dtype=bool)
    y = out[target].to_numpy(np.float64)
    for g in np.unique(groups[groups != NO_GROUP]):
        members = np.flatnonzero(groups == g)
        mean = float(y[members].mean())
        y[members[0]] = np.floor(mean + 0.5) if task.integer_target else mean
        keep[members[1:]] = False
    out[target] = y.astype(out[target].dtype) if task.integer_target else y
    return out[keep].reset_index(drop=True), groups[keep]
