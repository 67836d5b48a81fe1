"""A fold's backup: the last completed epoch (weights, optimizer state, epoch number) in `fold_<k>/backup/`,
written by Keras's BackupAndRestore at every epoch end and read back when the fold is trained again.

Standard library only at import: `train` reads the backup's epoch before Keras starts (training/deadline.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from lresizervit.io_utils import ensure_free_space, write_errors_naming

METADATA_FILE = "training_metadata.json"


def backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a BackupAndRestore folder (0 when there is none)."""
    meta = Path(backup_dir) / METADATA_FILE
    if not meta.is_file():
        return 0
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (ValueError, KeyError, TypeError):
        return 0  # unreadable: Keras falls back to its previous copy or starts over


def file_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def backup_callback(backup_dir: Path, model_file: Path):
    """BackupAndRestore that checks for room before each checkpoint and keeps it after `fit` (train_fold
    removes it once the fold's metrics are written).

    h5py, which writes the checkpoint, handles a full disk badly (hundreds of error lines, then a
    segmentation fault, measured): a checkpoint is as big as the last one, or as the model for the first.
    Two copies are kept (the previous one as `*.bkp`), so a kill while one is written loses one epoch, not
    the fold.
    """
    import keras

    class Backup(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            latest = Path(self._weights_path)
            ensure_free_space(latest, max(file_size(latest), file_size(model_file)) + 2**20)
            with write_errors_naming(latest):
                super()._save_model()

    return Backup(str(backup_dir), double_checkpoint=True, delete_checkpoint=False)
