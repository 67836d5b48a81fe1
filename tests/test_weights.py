"""`weights blank`: a preset folder with a known architecture and RANDOM weights, for timing only, marked
so that `weights check` warns about it; and its table of real preset architectures."""

from __future__ import annotations

import json
from types import MappingProxyType

import keras
import numpy as np
import pytest

from lresizervit.cli import main
from lresizervit.config import load_config
from lresizervit.models.keras_hub_backbone import build_keras_hub_backbone, preset_scale_offset
from lresizervit.weights import (
    BLANK_ARCHITECTURES,
    BLANK_MARKER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BlankArchitecture,
    check_backbone,
    write_blank_preset,
)

# keras-hub's Swin passes its attention mask along in a way Keras warns about: theirs, and harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'attn' \\(of type WindowAttention\\):UserWarning")

# A ViT of the real entries' kind, small enough to write in a test: the table is a parameter.
TINY = MappingProxyType({"tiny_vit": BlankArchitecture(
    "ViTBackbone", MappingProxyType({"image_shape": (32, 32, 3), "patch_size": (8, 8), "num_layers": 2,
                                     "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}),
    "ViTImageConverter", 32, IMAGENET_MEAN, IMAGENET_STD, "bilinear")})


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return write_blank_preset("tiny_vit", tmp_path_factory.mktemp("blank") / "tiny_vit", architectures=TINY)


def test_blank_preset_is_a_marked_keras_hub_preset_with_the_tables_converter(blank):
    assert sorted(p.name for p in blank.iterdir()) == sorted(
        [BLANK_MARKER, "config.json", "image_converter.json", "metadata.json", "model.weights.h5"])
    assert "NOT pretrained" in (blank / BLANK_MARKER).read_text()
    config = json.loads((blank / "config.json").read_text())
    assert config["class_name"] == "ViTBackbone" and config["config"]["hidden_dim"] == 16
    scale, offset = preset_scale_offset(str(blank), "blank")
    # ImageNet normalisation of [0, 255] pixels: 255 * scale = 1 / std, offset = -mean / std.
    np.testing.assert_allclose(np.array(scale) * 255, 1 / np.array(IMAGENET_STD), rtol=1e-6)
    np.testing.assert_allclose(offset, -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-6)
    model = build_keras_hub_backbone(f"keras_hub:{blank}", 32, "model.resizer.target_size")
    features = model(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(features.shape) == (2, 16)


def test_building_from_a_blank_preset_warns_too(blank, capsys):
    # `python -m lresizervit train` alone (no `weights check` before it) must not hide random weights either.
    build_keras_hub_backbone(f"keras_hub:{blank}", 32, "model.resizer.target_size")
    assert "this preset has RANDOM weights" in capsys.readouterr().out


def test_check_warns_about_a_blank_preset_and_not_about_another(blank, tmp_path, capsys):
    cfg = load_config("configs/demo.yaml", [f"model.backbone.name=keras_hub:{blank}"])
    assert "RANDOM weights" in check_backbone(cfg) and BLANK_MARKER in check_backbone(cfg)
    assert main(["weights", "check", "configs/demo.yaml", "--set", f"model.backbone.name=keras_hub:{blank}"]) == 0
    assert "WARNING" in capsys.readouterr().out
    plain = tmp_path / "plain"
    for name in ("config.json", "image_converter.json", "metadata.json"):
        (plain / name).parent.mkdir(exist_ok=True)
        (plain / name).write_bytes((blank / name).read_bytes())
    cfg = load_config("configs/demo.yaml", [f"model.backbone.name=keras_hub:{plain}"])
    assert check_backbone(cfg) == f"keras-hub preset at {plain}"


def test_blank_writes_whole_or_refuses(tmp_path, capsys):
    with pytest.raises(ValueError, match="known: tiny_vit"):
        write_blank_preset("swin_tiny", tmp_path / "x", architectures=TINY)
    assert not (tmp_path / "x").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        write_blank_preset("tiny_vit", taken, architectures=TINY)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    write_blank_preset("tiny_vit", taken, force=True, architectures=TINY)
    assert (taken / BLANK_MARKER).is_file() and not (taken / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    # The CLI: an unknown name is one error line naming the known ones.
    assert main(["weights", "blank", "swin_tiny", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "swin_base_patch4_window7_224" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BLANK_ARCHITECTURES))
def test_table_matches_keras_hubs_preset_parameter_counts(name):
    import keras_hub

    keras.backend.clear_session()
    backbone = BLANK_ARCHITECTURES[name].build_backbone()
    assert backbone.count_params() == keras_hub.models.Backbone.presets[name]["metadata"]["params"]
