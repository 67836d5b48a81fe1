from pathlib import Path

import pytest

from lresizervit.config import Config, ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, Config)


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg.train.epochs == Config().train.epochs


def test_yaml_values_and_overrides(tmp_path):
    p = write(tmp_path, "name: x\ntrain:\n  epochs: 3\n  learning_rate: 1\n")
    cfg = load_config(p, ["train.epochs=7", "model.resizer.mode=bilinear", "data.cache=true"])
    assert cfg.name == "x"
    assert cfg.train.epochs == 7
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.model.resizer.mode == "bilinear"
    assert cfg.data.cache is True


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.epoch" in str(e.value) and "exp.yaml" in str(e.value)


def test_unknown_section(tmp_path):
    p = write(tmp_path, "trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(p)


@pytest.mark.parametrize(
    "text,key",
    [
        ("train:\n  epochs: three\n", "train.epochs"),
        ("train:\n  epochs: 2.5\n", "train.epochs"),
        ("data:\n  cache: 1\n", "data.cache"),
        ("model:\n  resizer:\n    target_size: '224'\n", "model.resizer.target_size"),
        ("model:\n  resizer: learned\n", "model.resizer"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert key in str(e.value) and "exp.yaml" in str(e.value)


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.resizer.mode=bicubic", "model.resizer.mode"),
        ("model.loss=mae", "model.loss"),
        ("train.epochs=0", "train.epochs"),
        ("augment.hflip_p=1.5", "augment.hflip_p"),
        ("model.resizer.target_size=1024", "model.resizer.target_size"),
        ("train.nope=1", "train.nope"),
    ],
)
def test_bad_override_names_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_area_interpolation_is_refused_where_the_resizer_trains_through_it():
    # Measured: TensorFlow's ResizeArea has no gradient ("gradient registry has no entry for: ResizeArea") and
    # Keras on JAX has no area resize; a plain resize of the input needs no gradient, so there it stays.
    for mode in ("learned", "conv_after_resize"):
        with pytest.raises(ConfigError, match=r"'model.resizer.interpolation' is 'area'"):
            load_config(None, [f"model.resizer.mode={mode}", "model.resizer.interpolation=area"])
    assert load_config(None, ["model.resizer.mode=bilinear", "model.resizer.interpolation=area"]).model.resizer.mode \
        == "bilinear"


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.epochs"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_not_yaml(tmp_path):
    p = write(tmp_path, "train: [1, 2\n")
    with pytest.raises(ConfigError, match="exp.yaml"):
        load_config(p)


def test_save_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.epochs=5"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert not list((tmp_path / "run").glob(".*tmp"))
