"""`python -m lresizervit weights fetch|check|blank`: pretrained backbone weights as local folders.

An internet-off Kaggle notebook cannot download weights: they come in as an attached Kaggle Model or
dataset, a folder the config's `model.backbone.name` points at (`keras_hub:/kaggle/input/...`). `fetch`
makes such a folder on a machine with internet (kagglehub downloads the preset, the folder is copied to
`--out` whole or not at all); `check` says before any training whether the config's backbone can be found,
so `train_folds.sh` fails in seconds, not after the folds are written and the first fold's data is read.

`blank` writes a preset folder with a known preset's architecture and image converter but RANDOM weights,
for timing only: what a train step costs does not depend on the weight values, so the bench can measure a
pretrained recipe's backbone on a machine that cannot download it. The folder holds `BLANK_WEIGHTS.txt`,
and `check` warns about any config that points at such a folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from lresizervit.config import Config
from lresizervit.io_utils import atomic_write_folder
from lresizervit.models.preset_files import BLANK_MARKER, blank_weights_warning


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"--out {out}: exists and is not empty; choose another folder or pass --force")


def _write_folder(out: Path, fill: Callable[[Path], None], force: bool) -> Path:
    """Refuse a non-empty `out` unless `force`, then make it whole or not at all."""
    _check_out(out, force)
    return atomic_write_folder(out, fill)


def fetch_preset(preset: str, out: str | os.PathLike, force: bool = False) -> Path:
    """Copy keras-hub preset `preset` (a name, a kaggle:// handle or a folder) to the folder `out`."""
    from lresizervit.models.preset_files import resolve_preset

    out = Path(out)
    _check_out(out, force)  # before a download, not after it
    folder = Path(resolve_preset(preset))
    if folder.resolve() == out.resolve():
        raise ValueError(f"--out {out}: is the preset folder itself")
    return _write_folder(out, lambda tmp: shutil.copytree(folder, tmp), force)


# The marker file of a preset folder written by `weights blank`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BlankArchitecture:
    """What `weights blank NAME` builds: a keras-hub backbone class and the constructor arguments of preset
    NAME's config.json, and its image converter (normalising [0, 255] pixels by `mean` and `std`, in [0, 1]
    units, as the converter's `scale` and `offset`)."""

    backbone_class: str  # in keras_hub.models
    config: Mapping
    converter_class: str  # in keras_hub.layers
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    def scale_offset(self) -> tuple[list[float], list[float]]:
        return [1 / 255 / s for s in self.std], [-m / s for m, s in zip(self.mean, self.std, strict=True)]

    def build_backbone(self):
        """The backbone, randomly initialised."""
        import keras_hub

        return getattr(keras_hub.models, self.backbone_class)(**self.config)

    def build_converter(self):
        import keras_hub

        scale, offset = self.scale_offset()
        return getattr(keras_hub.layers, self.converter_class)(
            image_size=(self.image_size, self.image_size), scale=scale, offset=offset,
            interpolation=self.interpolation)


def _vit_b16(size: int) -> BlankArchitecture:
    # google/vit-base-patch16-{size} as keras-hub converts it; its processor normalises by mean = std = 0.5.
    return BlankArchitecture(
        "ViTBackbone", MappingProxyType({"image_shape": (size, size, 3), "patch_size": (16, 16), "num_layers": 12,
                                         "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072}),
        "ViTImageConverter", size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


# The architectures of keras-hub 0.29.1's presets of these names (their config.json, which lives on Kaggle:
# read from keras-hub's Hugging Face converters and checked by parameter count against the presets'
# metadata in tests/test_weights.py).
BLANK_ARCHITECTURES = MappingProxyType({
    "swin_base_patch4_window7_224": BlankArchitecture(
        "SwinTransformerBackbone",
        MappingProxyType({"image_shape": (224, 224, 3), "patch_size": 4, "embed_dim": 128,
                          "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "window_size": 7,
                          "mlp_ratio": 4.0, "qkv_bias": True, "drop_path": 0.1}),
        "SwinTransformerImageConverter", 224, IMAGENET_MEAN, IMAGENET_STD, "bicubic"),
    "vit_base_patch16_224_imagenet": _vit_b16(224),
    "vit_base_patch16_384_imagenet": _vit_b16(384),
    "dinov2_base": BlankArchitecture(
        "DINOV2Backbone",
        MappingProxyType({"patch_size": 14, "num_layers": 12, "hidden_dim": 768, "num_heads": 12,
                          "intermediate_dim": 3072, "layer_scale_init_value": 1.0,
                          "image_shape": (518, 518, 3), "position_embedding_shape": (518, 518)}),
        "DINOV2ImageConverter", 518, IMAGENET_MEAN, IMAGENET_STD, "bicubic"),
})


def _blank_note(name: str) -> str:
    import keras_hub

    return (
        f"RANDOM WEIGHTS. This folder has the architecture and image converter of the keras-hub preset {name!r}\n"
        f"(keras-hub {keras_hub.__version__}) but randomly initialised weights: it was written by\n"
        f"`python -m lresizervit weights blank {name}` to time a train step (`bench --what step`), which does\n"
        "not depend on the weight values. It is NOT pretrained: a model trained from it is a model trained\n"
        f"from scratch. For the real weights: `python -m lresizervit weights fetch {name} --out DIR`.\n"
    )


def write_blank_preset(name: str, out: str | os.PathLike, force: bool = False,
                       architectures: Mapping[str, BlankArchitecture] = BLANK_ARCHITECTURES) -> Path:
    """Write preset `name`'s architecture with random weights, its image converter and `BLANK_MARKER` to
    the folder `out` (a keras-hub preset folder that `keras_hub:<out>` loads)."""
    if name not in architectures:
        raise ValueError(f"weights blank: no architecture known for {name!r}; known: {', '.join(architectures)}")
    arch = architectures[name]
    out = Path(out)

    def fill(tmp: Path) -> None:
        arch.build_backbone().save_to_preset(str(tmp))
        arch.build_converter().save_to_preset(str(tmp))
        (tmp / BLANK_MARKER).write_text(_blank_note(name), encoding="utf-8")

    return _write_folder(out, fill, force)


def cache_preset(handle: str, folder: str | os.PathLike) -> Path:
    """Make `folder` (a keras-hub preset folder: a Kaggle Model attached to a notebook, a copy made by `fetch`)
    kagglehub's cached copy of the versioned Kaggle Model `handle`, linked, not copied: `keras_hub:<preset
    name>` (whose handle it is) then resolves to it with no network, so a kernel trains with the very config
    that names the preset. The cache is kagglehub's (KAGGLEHUB_CACHE, else ~/.cache/kagglehub)."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    from lresizervit.models.preset_files import KAGGLE_SCHEME, PRESET_CONFIG_FILE

    try:
        parsed = parse_model_handle(handle.removeprefix(KAGGLE_SCHEME).strip("/"))
    except ValueError as exc:
        raise ValueError(f"weights cache: {handle!r} is not a Kaggle Model handle ({exc})") from None
    if not parsed.is_versioned():
        raise ValueError(f"weights cache: {handle!r} has no version: owner/model/framework/variation/version")
    folder = Path(folder).resolve()
    if not (folder / PRESET_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"weights cache: {folder} holds no {PRESET_CONFIG_FILE}: not a preset folder")
    cache = Cache()
    path = Path(cache.get_path(parsed))
    if path.is_symlink() or path.exists():
        if path.resolve() == folder:
            cache.mark_as_complete(parsed)
            return path
        if not path.is_symlink():
            raise FileExistsError(f"weights cache: {path} holds a downloaded copy of {handle} already; it is used")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(folder, path, target_is_directory=True)
    cache.mark_as_complete(parsed)
    return path


def check_backbone(cfg: Config) -> str:
    """Where the config's backbone comes from, or the error that says what to attach or fetch."""
    name = cfg.model.backbone.name
    if ":" not in name:  # a native architecture (no prefix): nothing to find, and no need to import Keras
        return f"native {name}, trained from scratch (no weights to load)"
    from lresizervit.models.preset_files import is_keras_hub_spec, is_savedmodel_spec, resolve_preset

    # A preset folder or kaggle:// handle needs no Keras; a preset name imports keras_hub (its registry).
    if is_keras_hub_spec(name):
        folder = resolve_preset(name.split(":", 1)[1])
        warning = blank_weights_warning(folder)
        return f"keras-hub preset at {folder}" + (f" -- {warning}" if warning else "")
    if is_savedmodel_spec(name):
        from lresizervit.models.backbones import resolve_backbone_path

        return f"SavedModel at {resolve_backbone_path(name)}"
    return f"native {name}, trained from scratch (no weights to load)"
