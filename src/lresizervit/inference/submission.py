"""Write and check `submission.csv`: `<id_column>,<target_column>` (Pawpularity: `Id,Pawpularity`), one row
per test id in test.csv's order, finite, in the task's target range. A submission is written only after it passes, atomically, so a failed check never replaces
or truncates an earlier file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.io_utils import atomic_write_csv
from lresizervit.task import Task


class SubmissionError(ValueError):
    """A submission breaks the competition's format; the message names the file and the row."""


def check_submission(sub: pd.DataFrame, test_ids, task: Task, source: str = "submission") -> None:
    """Raise SubmissionError on the first problems (up to 5 listed) with row numbers (1-based data rows)."""
    ID, TARGET = task.id_column, task.target_column
    columns = [ID, TARGET]
    if list(sub.columns) != columns:
        raise SubmissionError(f"{source}: header must be {','.join(columns)}, got {','.join(map(str, sub.columns))}")
    test_ids = [str(i) for i in test_ids]
    problems = []
    if len(sub) != len(test_ids):
        problems.append(f"has {len(sub)} rows but the test set has {len(test_ids)} Ids")
    ids = sub[ID].astype(str).tolist()
    seen: dict[str, int] = {}
    expected = set(test_ids)
    for row, i in enumerate(ids, start=1):
        if i in seen:
            problems.append(f"row {row}: {ID} {i} repeats row {seen[i]}")
        seen.setdefault(i, row)
        if i not in expected:
            problems.append(f"row {row}: {ID} {i} is not in the test set")
    missing = [i for i in test_ids if i not in seen]
    if missing:
        problems.append(f"{len(missing)} test Ids have no row, e.g. {missing[0]}")
    if not problems and ids != test_ids:
        first = next(r for r, (a, b) in enumerate(zip(ids, test_ids, strict=False), start=1) if a != b)
        problems.append(f"row {first}: Ids are not in test.csv's order")
    values = pd.to_numeric(sub[TARGET], errors="coerce").to_numpy(dtype=np.float64)
    for row, v in enumerate(values, start=1):
        if not np.isfinite(v):
            raw = sub[TARGET].iloc[row - 1]
            shown = repr(raw) if isinstance(raw, str) else str(raw)
            problems.append(f"row {row}, column {TARGET}: {shown} is not a finite number")
        elif not task.lo <= v <= task.hi:
            problems.append(f"row {row}, column {TARGET}: {v} is outside [{task.lo:g}, {task.hi:g}]")
    if problems:
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise SubmissionError(f"{source}: " + "\n  ".join(["invalid submission:", *problems[:5]]) + more)


def write_submission(ids, preds, test_ids, path: str | os.PathLike, task: Task) -> Path:
    """Clip to the target range, check against the test ids, then write atomically."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    sub = pd.DataFrame({task.id_column: [str(i) for i in ids], task.target_column: task.clip(preds)})
    # NaN survives np.clip: the check below still sees it, which is the point.
    check_submission(sub, test_ids, task, source=str(path))
    return atomic_write_csv(path, sub)


def validate_file(path: str | os.PathLike, test_csv: str | os.PathLike, task: Task) -> int:
    """Check an existing submission file against test.csv; return its row count."""
    from lresizervit.data.schema import read_table

    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: file not found")
    try:
        sub = pd.read_csv(path, dtype={task.id_column: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not a readable CSV ({exc})") from None
    test = read_table(test_csv, "test", task)
    check_submission(sub, test[task.id_column], task, source=str(path))
    return len(sub)
