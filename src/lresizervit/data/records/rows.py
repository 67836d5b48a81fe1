"""A frame's rows as the records hold them: the checked columns, and the fingerprint of those rows.

The fingerprint goes into the manifest when writing and is compared when training, so records written
from other rows (an older folds file) are refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from lresizervit.task import FOLD, Task

__all__ = ["frame_columns", "rows_fingerprint"]


def rows_fingerprint(df: pd.DataFrame, task: Task) -> str:
    """SHA-256 of a frame's ids, metadata, targets and folds, in row order (what the records were made from)."""
    rows = frame_columns(df, task)
    h = hashlib.sha256()
    h.update("\n".join(rows["id"]).encode("utf-8") + b"\0")
    h.update(rows["metadata"].astype("<f4").tobytes())
    if rows["target"] is not None:
        h.update(b"target" + rows["target"].astype("<f4").tobytes())
    if rows["has_fold"]:
        h.update(b"fold" + rows["fold"].astype("<i8").tobytes())
    return h.hexdigest()


def frame_columns(df: pd.DataFrame, task: Task) -> dict[str, Any]:
    """The columns a record holds, checked: ids unique, values finite, a fold only with a target."""
    ID, TARGET = task.id_column, task.target_column
    missing = [c for c in (ID, *task.metadata_columns) if c not in df.columns]
    if missing:
        raise ValueError(f"the frame lacks the column(s) {missing}")
    if len(df) == 0:
        raise ValueError("the frame has no rows to write")
    has_target, has_fold = TARGET in df.columns, FOLD in df.columns
    if has_fold and not has_target:
        raise ValueError(f"the frame has {FOLD!r} but no {TARGET!r}: folds only make sense for training rows")
    ids = [str(i) for i in df[ID]]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ValueError(f"duplicate {ID} {dup!r} in the frame")
    metadata = df[list(task.metadata_columns)].to_numpy(np.float32).reshape(len(df), -1)
    if not np.isfinite(metadata).all():
        raise ValueError("the metadata columns hold missing or non-finite values")
    target = df[TARGET].to_numpy(np.float32) if has_target else None
    if target is not None and not np.isfinite(target).all():
        raise ValueError(f"{TARGET!r} holds missing or non-finite values")
    fold = df[FOLD].to_numpy(np.int64) if has_fold else np.full(len(df), -1, np.int64)
    if has_fold and (fold < 0).any():
        raise ValueError(f"{FOLD!r} holds negative values; folds are 0..K-1")
    return {"id": ids, "metadata": metadata, "target": target, "fold": fold, "has_fold": has_fold}
