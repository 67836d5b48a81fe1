"""What a preset folder's name and files say, and where a `keras_hub:` preset's folder is, without importing
Keras: `weights check` (train_folds.sh's first command), `weights fetch` and the CLI use these, so they stay
cheap (importing Keras costs ~7 s on a CPU). A preset *name* still imports keras_hub, for its registry."""

from __future__ import annotations

import os

KERAS_HUB_PREFIX = "keras_hub:"
BACKBONE_KEY = "model.backbone.name"
KAGGLE_SCHEME = "kaggle://"
PRESET_CONFIG_FILE = "config.json"
# Where Kaggle mounts an attached Kaggle Model: /kaggle/input/<model>/<framework>/<variation>/<version>.
KAGGLE_INPUT_DIR = "/kaggle/input"
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


def is_keras_hub_spec(name_or_spec: str) -> bool:
    return name_or_spec.startswith(KERAS_HUB_PREFIX)


def is_savedmodel_spec(name_or_spec: str) -> bool:
    return name_or_spec.startswith((SAVEDMODEL_PREFIX, HUB_PREFIX))


class BackboneUnavailableError(FileNotFoundError):
    """A `hub:` or `keras_hub:` backbone cannot be fetched (no network, no cached copy); the message says
    what to do."""


def _kaggle_handle(preset: str) -> str | None:
    """`owner/model/framework/variation[/version]` for a preset name or `kaggle://` handle, else None."""
    if preset.startswith(KAGGLE_SCHEME):
        return preset[len(KAGGLE_SCHEME):].strip("/")
    if os.sep in preset or "/" in preset or preset.startswith(("~", ".")):
        return None  # a path, never a preset name: no keras_hub (and TensorFlow) import, ~7 s on a 2-core CPU
    import keras_hub

    known = keras_hub.models.Backbone.presets.get(preset)
    if known is None or not str(known.get("kaggle_handle", "")).startswith(KAGGLE_SCHEME):
        return None
    return known["kaggle_handle"][len(KAGGLE_SCHEME):]


def _offline_advice(preset: str, handle: str) -> str:
    parts = handle.split("/")
    model, framework, variation = parts[1:4]
    version = parts[4] if len(parts) > 4 else "<version>"
    return (
        f"{BACKBONE_KEY} 'keras_hub:{preset}' needs the internet (kagglehub downloads kaggle://{handle}). "
        f"Offline (e.g. a Kaggle notebook with the internet off), attach the Kaggle Model "
        f"{'/'.join(parts[:4])} to the notebook and set {BACKBONE_KEY} to "
        f"'keras_hub:{KAGGLE_INPUT_DIR}/{model}/{framework}/{variation}/{version}' (the attached folder that "
        f"holds {PRESET_CONFIG_FILE}); anywhere else, point it at a local copy of the preset folder, made on a "
        f"machine with internet by `python -m lresizervit weights fetch {preset} --out DIR`"
    )


def resolve_preset(preset: str) -> str:
    """A preset folder, name or `kaggle://` handle → an absolute local folder holding config.json.

    A name is looked up in kagglehub's cache first (a versioned handle found there needs no network), then
    downloaded; offline that fails within `net.TIMEOUT_S` with a `BackboneUnavailableError`.
    """
    if not preset:
        raise ValueError(f"{BACKBONE_KEY} 'keras_hub:' names no preset: give a preset folder or name")
    local = os.path.abspath(os.path.expanduser(preset))
    handle = None if os.path.isdir(local) else _kaggle_handle(preset)
    if handle is None:
        if not os.path.isdir(local):
            raise FileNotFoundError(
                f"{BACKBONE_KEY} 'keras_hub:{preset}': no folder {local!r}, and {preset!r} is not a "
                "keras-hub preset name (keras_hub.models.Backbone.presets lists them, e.g. "
                "vit_base_patch16_384_imagenet, swin_base_patch4_window12_384, dinov2_base)"
            )
        if not os.path.isfile(os.path.join(local, PRESET_CONFIG_FILE)):
            raise FileNotFoundError(
                f"{BACKBONE_KEY} 'keras_hub:{preset}': folder {local!r} holds no {PRESET_CONFIG_FILE}; point "
                "it at the preset folder itself (for an attached Kaggle Model, the version folder under "
                f"{KAGGLE_INPUT_DIR})"
            )
        return local
    return _download(preset, handle)


def _download(preset: str, handle: str) -> str:
    import kagglehub
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle
    from kagglesdk.kaggle_env import get_endpoint, get_env

    from lresizervit.net import unreachable

    try:
        parsed = parse_model_handle(handle)
    except ValueError as exc:
        raise ValueError(f"{BACKBONE_KEY} 'keras_hub:{preset}': bad Kaggle Model handle ({exc})") from None
    if parsed.is_versioned():
        # kagglehub's cache layout: a finished download is marked complete; its folder is the preset.
        cached = Cache().load_from_cache(parsed)
        if cached and os.path.isfile(os.path.join(cached, PRESET_CONFIG_FILE)):
            return cached
    # kagglehub sets no connect timeout: offline, fail fast and say what to do instead.
    why = unreachable(get_endpoint(get_env()))
    if why is not None:
        raise BackboneUnavailableError(f"{_offline_advice(preset, handle)} ({why})")
    try:
        folder = kagglehub.model_download(handle)
    except Exception as exc:  # HTTP, auth and file errors alike mean "not fetched"
        raise BackboneUnavailableError(
            f"{_offline_advice(preset, handle)} (kagglehub: {type(exc).__name__}: {exc})"
        ) from exc
    if not os.path.isfile(os.path.join(folder, PRESET_CONFIG_FILE)):
        raise BackboneUnavailableError(f"kagglehub downloaded {handle} to {folder!r}, which holds no "
                                       f"{PRESET_CONFIG_FILE}: it is not a keras-hub preset")
    return folder
