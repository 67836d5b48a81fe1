"""The data files of a task (train.csv, test.csv, the folds file): strict readers that say exactly what is wrong.

Every reader raises :class:`SchemaError` naming the file, the data row (1-based) with its CSV line
(row + 1, since the header is line 1) and the column, so a bad hand-made data set fails before training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lresizervit.task import FOLD, GROUP, Task

# Column names, the target's range and the image layout are the task's (lresizervit/task.py); this module
# owns only how a CSV of that task is read and checked.
KINDS = ("train", "test", "folds")

# How many problems one message lists before "... and N more".
MAX_LISTED = 5

# What pandas would read as missing; we read everything as text, so spell it out.
_NA_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "<na>", "#n/a"})
# The Id becomes a file name, so it must not escape the image folder or hide whitespace.
_BAD_ID_CHARS = re.compile(r"[\s/\\\x00-\x1f\x7f]")
_MANGLED_DUPLICATE = re.compile(r"^(.*)\.\d+$")


class SchemaError(ValueError):
    """A data file does not match the expected format; the message names file, row and column."""

    def __init__(self, message: str, *, source: str | None = None, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.source = source
        self.problems = tuple(problems)

    @classmethod
    def from_problems(
        cls, source: str | os.PathLike[str], problems: Sequence[str], note: str | None = None,
        max_listed: int | None = MAX_LISTED,
    ) -> SchemaError:
        """One message listing the first `max_listed` problems (None: all) and a count of the rest."""
        source = str(source)
        listed = len(problems) if max_listed is None else max_listed
        if len(problems) == 1:
            message = f"{source}: {problems[0]}"
        else:
            lines = [f"{source}: {len(problems)} problems:"]
            lines += [f"  {p}" for p in problems[:listed]]
            if len(problems) > listed:
                lines.append(f"  ... and {len(problems) - listed} more")
            message = "\n".join(lines)
        if note:
            message += f"\n{note}"
        return cls(message, source=source, problems=problems)


def where(row_index: int, column: str | None = None) -> str:
    """'row N (line N+1), column 'C'' for a 0-based position in a frame read from a CSV."""
    row = row_index + 1
    text = f"row {row} (line {row + 1})"
    return f"{text}, column {column!r}" if column is not None else text


def read_table(path: str | os.PathLike[str], kind: str, task: Task) -> pd.DataFrame:
    """Read and validate a ``train``, ``test`` or ``folds`` CSV of `task`.

    Returns a frame with a RangeIndex (position = data row - 1), the id column as str, the fold column and
    integer-valued columns as int64 and the others as float64. A folds file may end with the GROUP column
    (files written before it existed do not). Raises :class:`SchemaError` on the first kind of problem found
    (file, columns, values).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    expected = task.columns(kind)
    raw = _read_raw(path)
    if kind == "folds" and GROUP in raw.columns:
        expected = (*expected, GROUP)
    _check_columns(path, list(raw.columns), expected, kind, task)

    problems: list[tuple[int, int, str]] = []  # (row, column position, message): sorted like a linter
    problems += _id_problems(raw[task.id_column], task.id_column)
    out = pd.DataFrame({task.id_column: raw[task.id_column].astype(str)})
    not_binary: list[tuple[int, str, str]] = []  # (row, column, value) of numbers other than 0 and 1
    for col in expected[1:]:
        binary = False
        if col == task.target_column:
            lo, hi, integer = task.lo, task.hi, task.integer_target
        elif col == FOLD:
            lo, hi, integer = 0, None, True
        elif col == GROUP:
            lo, hi, integer = -1, None, True
        else:
            # With metadata_binary the 0/1 check comes after parsing: a column of real numbers is one
            # problem of the task's setting, not one per row.
            lo, hi, integer, binary = None, None, False, task.metadata_binary
        values, col_problems = _number_column(raw[col], col, lo, hi, integer, "0 or 1" if binary else None)
        problems += [(row, expected.index(col), msg) for row, msg in col_problems]
        if binary:
            bad_rows = {row for row, _ in col_problems}
            not_binary += [(int(i), col, raw[col].iloc[i]) for i in np.flatnonzero((values != 0) & (values != 1))
                           if i not in bad_rows]
            integer = True
        out[col] = values.astype("int64" if integer else "float64")
    if not_binary:
        row, col, _ = min(not_binary, key=lambda p: (p[0], expected.index(p[1])))
        problems.append((row, expected.index(col), _not_binary_problem(not_binary, expected)))
    if problems:
        problems.sort(key=lambda p: (p[0], p[1]))
        raise SchemaError.from_problems(path, [msg for _, _, msg in problems])
    return out


def check_images(df: pd.DataFrame, data_dir: str | os.PathLike[str], split: str,
                 source: str | os.PathLike[str], task: Task) -> list[str]:
    """Check that the image of every row (`task.image_path` under `data_dir`) exists and is non-empty;
    return the paths in row order.

    ``source`` is the CSV the rows came from (named in the message); rows are counted by position.
    """
    missing_dir = missing_image_dir(data_dir, split, task)
    if missing_dir is not None:
        raise SchemaError.from_problems(source, [f"image directory {missing_dir} not found"])
    paths: list[str] = []
    problems: list[str] = []
    id_column = task.id_column
    for i, image_id in enumerate(df[id_column].astype(str)):
        p = task.image_file(data_dir, split, image_id)
        paths.append(str(p))
        try:
            size = p.stat().st_size if p.is_file() else None
        except OSError:
            size = None
        if size is None:
            problems.append(f"{where(i)}, {id_column} {image_id!r}: image {p} not found")
        elif size == 0:
            problems.append(f"{where(i)}, {id_column} {image_id!r}: image {p} is empty (0 bytes)")
    if problems:
        raise SchemaError.from_problems(source, problems)
    return paths


def missing_image_dir(data_dir: str | os.PathLike[str], split: str, task: Task) -> Path | None:
    """The folder that holds every image of `split`, when the layout has one and it does not exist: a
    missing folder is said once rather than once per row."""
    image_dir = task.image_file(data_dir, split, "x").parent
    if "{id}" not in Path(task.image_path).parent.as_posix() and not image_dir.is_dir():
        return image_dir
    return None


def validate_dataset(data_dir: str | os.PathLike[str], task: Task) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a competition-shaped folder: train.csv, test.csv and the image of every row."""
    data_dir = Path(data_dir)
    frames = []
    for kind in ("train", "test"):
        csv = data_dir / f"{kind}.csv"
        df = read_table(csv, kind, task)
        check_images(df, data_dir, kind, csv, task)
        frames.append(df)
    return frames[0], frames[1]


# --- internals -------------------------------------------------------------------------------------


def _read_raw(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every cell as the text in the file, so Ids stay verbatim and the checks see what the user wrote."""
    p = Path(path)
    if not p.exists():
        raise SchemaError.from_problems(path, ["file not found"])
    if not p.is_file():
        raise SchemaError.from_problems(path, ["not a regular file"])
    try:
        raw = pd.read_csv(
            p,
            dtype=str,
            na_filter=False,
            # A blank line must stay a row, or every later "line N" would be off by one.
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise SchemaError.from_problems(path, ["file is empty (no header line)"]) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SchemaError.from_problems(path, [f"not a readable CSV file: {e}"]) from e
    # Trailing blank lines are harmless (editors add them) and shift nothing before them.
    blank = (raw == "").all(axis=1).to_numpy()
    n = len(raw)
    while n and blank[n - 1]:
        n -= 1
    raw = raw.iloc[:n].reset_index(drop=True)
    if n == 0:
        raise SchemaError.from_problems(path, ["no data rows (only a header)"])
    return raw


def _check_columns(
    path: str | os.PathLike[str], actual: list[str], expected: Sequence[str], kind: str, task: Task
) -> None:
    problems: list[str] = []
    missing = [c for c in expected if c not in actual]
    unexpected = [c for c in actual if c not in expected]
    if missing:
        problems.append(f"missing column{_s(missing)} {_names(missing)}")
    for c in unexpected:
        m = _MANGLED_DUPLICATE.match(c)
        if m and m.group(1) in actual:
            hint = f" (column {m.group(1)!r} appears twice in the header)"
        elif c == task.target_column and kind == "test":
            hint = " (a test file has no target)"
        elif c == FOLD and kind == "train":
            hint = " (this looks like a folds file)"
        elif c.strip() in expected:
            hint = " (stray whitespace in the header?)"
        else:
            hint = ""
        problems.append(f"unexpected column {c!r}{hint}")
    if not problems and actual != list(expected):
        k = next(i for i, (a, e) in enumerate(zip(actual, expected, strict=False)) if a != e)
        problems.append(
            f"columns are in the wrong order: column {k + 1} is {actual[k]!r}, expected {expected[k]!r}"
        )
    if problems:
        note = f"(a {kind} file has the columns: {', '.join(expected)})"
        raise SchemaError.from_problems(path, problems, note)


def _id_problems(ids: pd.Series, column: str) -> list[tuple[int, int, str]]:
    problems: list[tuple[int, int, str]] = []
    first_seen: dict[str, int] = {}
    for i, value in enumerate(ids.astype(str)):
        if value.strip() == "":
            problems.append((i, 0, f"{where(i, column)}: empty {column}"))
            continue
        if _BAD_ID_CHARS.search(value):
            problems.append(
                (
                    i,
                    0,
                    f"{where(i, column)}: {column} {value!r} contains whitespace, a path separator or a control "
                    "character (it names the image file)",
                )
            )
        if value in first_seen:
            j = first_seen[value]
            problems.append((i, 0, f"{where(i, column)}: duplicate {column} {value!r} (also at {where(j)})"))
        else:
            first_seen[value] = i
    return problems


def _number_column(
    raw: pd.Series, col: str, lo: float | None, hi: float | None, integer: bool, wanted: str | None = None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Parse one numeric column; for an integer one '37.0' counts as 37 (pandas writes ints as floats once a
    NaN appeared). `wanted` overrides what the messages say is expected."""
    text = raw.astype(str).str.strip()
    missing = text.str.lower().isin(_NA_TOKENS).to_numpy()
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
    not_number = ~missing & ~np.isfinite(num)
    valid = ~missing & ~not_number
    with np.errstate(invalid="ignore"):
        not_int = valid & (num != np.floor(num)) if integer else np.zeros_like(missing)
        too_small = num < lo if lo is not None else np.zeros_like(missing)
        too_big = num > hi if hi is not None else np.zeros_like(missing)
        out_of_range = valid & ~not_int & (too_small | too_big)
    kind = "an integer" if integer else "a number"
    if wanted is None and lo is None and hi is None:
        wanted = "a finite number"
    elif wanted is None and hi is None:
        wanted = f"{kind} >= {lo:g}"
    elif wanted is None:
        wanted = f"{kind} in {lo:g}..{hi:g}"
    problems: list[tuple[int, str]] = []
    bad = np.flatnonzero(missing | not_number | not_int | out_of_range)
    for i in bad:
        if missing[i]:
            msg = "missing value"
        elif not_number[i]:
            msg = f"value {raw.iloc[i]!r} is not a finite number (expected {wanted})"
        elif not_int[i]:
            msg = f"value {raw.iloc[i]!r} is not an integer (expected {wanted})"
        else:
            msg = f"value {raw.iloc[i]!r} is not {wanted}"
        problems.append((int(i), f"{where(int(i), col)}: {msg}"))
    return np.where(np.isfinite(num), num, 0), problems


def _not_binary_problem(found: list[tuple[int, str, str]], header: Sequence[str]) -> str:
    """One line for every metadata value that is a number but not 0 or 1: the first few, the count, and
    the config key that allows them."""
    columns = [c for c in header if any(col == c for _, col, _ in found)]
    found = sorted(found, key=lambda p: (p[0], header.index(p[1])))
    if len(columns) == 1:
        what, verb, these = f"column {columns[0]!r}", "holds", "this column holds"
    else:
        what, verb, these = f"metadata columns {_names(columns)}", "hold", "these columns hold"
    examples = ", ".join(f"{where(row, col if len(columns) > 1 else None)}: {value!r}"
                         for row, col, value in found[:MAX_LISTED])
    more = f", ... ({len(found) - MAX_LISTED} more)" if len(found) > MAX_LISTED else ""
    return (f"{what} {verb} {len(found)} value{_s(found)} that {'is' if len(found) == 1 else 'are'} not 0 "
            f"or 1 ({examples}{more}); task.metadata_binary is true (the default for Pawpularity): set "
            f"`task.metadata_binary: false` in the config's task section if {these} real numbers")


def _names(columns: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def _s(items: Sequence[object]) -> str:
    return "" if len(items) == 1 else "s"
