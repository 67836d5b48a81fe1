"""The task's facts: which columns a data set has, where its images are, what range the target takes and
which Kaggle competition it belongs to. They come from the config's `task` section (default: PetFinder.my
Pawpularity), so any image + tabular regression data set in Kaggle's layout trains without code changes.

Every stage reads them from here (schema, folds, loader, the model's head and loss scaling, clipping,
synth, the submission writer, the Kaggle commands); no other module spells a column name or the range.
This module imports nothing of the project, so `models/` needs no CSV reader to know the target's range.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAWPULARITY_METADATA = ("Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage",
                        "Human", "Occlusion", "Info", "Blur")
# The folds file's own column (train.csv + the fold each row is validated in): ours, not the task's.
FOLD = "kfold"
# Its optional last column (written when duplicate photos were looked for): the row's group of duplicate
# photos, -1 for a photo with none; a group never spans two folds.
GROUP = "group"
SPLITS = ("train", "test")


@dataclass
class Task:
    # Kaggle competition slug, for `kaggle download` / `kaggle submit`.
    competition: str = "petfinder-pawpularity-score"
    # Column of train.csv / test.csv naming each row; it also names the image file (see image_path).
    id_column: str = "Id"
    # Column of train.csv to predict; the submission's header is `<id_column>,<target_column>`.
    target_column: str = "Pawpularity"
    # [lo, hi]: targets must lie in it; the BCE loss trains on (y - lo) / (hi - lo) and every prediction
    # (OOF, blend, submission) is clipped to it.
    target_range: list[float] = field(default_factory=lambda: [1.0, 100.0])
    # Targets must be whole numbers (checked when train.csv is read); predictions stay real numbers.
    integer_target: bool = True
    # Tabular columns fed to the model, in order ([] = image only). Any numbers: 0/1 columns pass as they
    # are, others are standardised with the fold's training statistics, stored inside the model.
    metadata_columns: list[str] = field(default_factory=lambda: list(PAWPULARITY_METADATA))
    # Every metadata value must be 0 or 1 (Pawpularity's are), checked when a CSV is read; false: any finite
    # numbers. Only a check of the data: the model treats a column by the values it holds either way.
    metadata_binary: bool = True
    # Image of a row, relative to data.dir; {split} is train or test, {id} the row's id.
    image_path: str = "{split}/{id}.jpg"

    @property
    def lo(self) -> float:
        return float(self.target_range[0])

    @property
    def hi(self) -> float:
        return float(self.target_range[1])

    def columns(self, kind: str) -> tuple[str, ...]:
        """The exact header of a `train`, `test` or `folds` CSV, in order (a folds file may add GROUP)."""
        base = (self.id_column, *self.metadata_columns)
        by_kind = {"train": (*base, self.target_column), "test": base,
                   "folds": (*base, self.target_column, FOLD)}
        if kind not in by_kind:
            raise ValueError(f"kind must be one of {sorted(by_kind)}, got {kind!r}")
        return by_kind[kind]

    def image_file(self, data_dir, split: str, image_id: str):
        """Where the image of one row lives."""
        return Path(data_dir) / self.image_path.format(split=split, id=image_id)

    def clip(self, pred) -> np.ndarray:
        """Predictions clipped to the target range (NaN stays NaN, so the submission check still sees it)."""
        return np.clip(np.asarray(pred, dtype=np.float64), self.lo, self.hi)

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every fact that cannot work; the config loader turns them into errors."""
        out: list[tuple[str, str]] = []
        r = self.target_range
        if len(r) != 2 or not all(math.isfinite(v) for v in r) or not r[0] < r[1]:
            out.append(("target_range", f"must be [lo, hi] with finite lo < hi, got {r!r}"))
        for key in ("competition", "id_column", "target_column"):
            if not getattr(self, key).strip():
                out.append((key, "must not be empty"))
        names = [self.id_column, self.target_column, *self.metadata_columns]
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            out.append(("metadata_columns", f"repeats or reuses the id/target column: {dup}"))
        for own in (FOLD, GROUP):
            if own in names:
                out.append(("metadata_columns", f"{own!r} is the folds file's own column"))
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.image_path) if f is not None}
        except ValueError as exc:
            fields = {f"<{exc}>"}
        if "id" not in fields or fields - {"id", "split"}:
            out.append(("image_path", f"must use {{id}} (and may use {{split}}) and nothing else, got "
                                      f"{self.image_path!r}"))
        return out


PAWPULARITY = Task()


def rmse(y_true, y_pred) -> float:
    """The competition's metric, over all rows at once (never averaged per batch or per fold)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
