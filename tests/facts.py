"""The default task's facts (PetFinder.my Pawpularity) under the names the tests use; the code itself
reads them from the config's `task` section (lresizervit/task.py)."""

from lresizervit.task import FOLD, PAWPULARITY

TASK = PAWPULARITY
ID = TASK.id_column
TARGET = TASK.target_column
META_COLUMNS = tuple(TASK.metadata_columns)
TRAIN_COLUMNS = TASK.columns("train")
TEST_COLUMNS = TASK.columns("test")
FOLD_COLUMNS = TASK.columns("folds")
TARGET_MIN, TARGET_MAX = TASK.target_range

__all__ = ["FOLD", "FOLD_COLUMNS", "ID", "META_COLUMNS", "TARGET", "TARGET_MAX", "TARGET_MIN", "TASK",
           "TEST_COLUMNS", "TRAIN_COLUMNS"]
