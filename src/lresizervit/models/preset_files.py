"""What a preset folder's name and files say, without importing Keras: `weights check` and the CLI read
these for a config whose backbone needs no Keras at all (a native one), so they stay cheap to import."""

from __future__ import annotations

import os

KERAS_HUB_PREFIX = "keras_hub:"
# A TF SavedModel backbone, from a folder or TF-Hub (models/backbones.py): TensorFlow only.
SAVEDMODEL_PREFIX = "savedmodel:"
HUB_PREFIX = "hub:"
# Written by `weights blank` into a preset folder of random weights (timing only).
BLANK_MARKER = "BLANK_WEIGHTS.txt"


def blank_weights_warning(folder: str | os.PathLike) -> str | None:
    """The warning for a preset folder written by `weights blank`, or None for any other folder."""
    if not os.path.isfile(os.path.join(folder, BLANK_MARKER)):
        return None
    return (f"WARNING: {os.path.join(folder, BLANK_MARKER)}: this preset has RANDOM weights (written by "
            "`weights blank`, for timing only); training from it is training from scratch")


def is_savedmodel_spec(name_or_spec: str) -> bool:
    return name_or_spec.startswith((SAVEDMODEL_PREFIX, HUB_PREFIX))
