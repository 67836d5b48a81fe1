import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lresizervit.data.schema import validate_dataset
from lresizervit.data.synth import SynthParams, generate, render_image
from tests.facts import TASK

SMALL = SynthParams(seed=3, min_side=64, max_side=96, max_long_side=128)


def test_layout_schema_and_determinism(tmp_path):
    info = generate(tmp_path / "a", 40, 8, SMALL, workers=1)
    train, test = validate_dataset(tmp_path / "a", TASK)  # the real schema checks, images included
    assert len(train) == 40 and len(test) == 8
    assert train["Id"].str.fullmatch(r"[0-9a-f]{32}").all()
    sample = pd.read_csv(tmp_path / "a" / "sample_submission.csv", dtype={"Id": str})
    assert list(sample.columns) == ["Id", "Pawpularity"] and sample["Id"].tolist() == test["Id"].tolist()
    saved = json.loads((tmp_path / "a" / "generator.json").read_text())
    assert saved["params"]["seed"] == 3 and saved == json.loads(json.dumps(info))
    assert 0 < saved["noise_floor_rmse"] < saved["constant_baseline_rmse"]

    generate(tmp_path / "b", 40, 8, SMALL, workers=2)
    for name in ("train.csv", "test.csv", "generator.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    first = train["Id"].iloc[0]
    assert (tmp_path / "a/train" / f"{first}.jpg").read_bytes() == (tmp_path / "b/train" / f"{first}.jpg").read_bytes()
    other = generate(tmp_path / "c", 40, 8, SynthParams(seed=4, min_side=64, max_side=96, max_long_side=128))
    assert other["target_mean"] != info["target_mean"]


def test_target_distribution_close_to_the_competition(tmp_path):
    from lresizervit.data.synth import _latents, _signal

    p = SynthParams(seed=0)
    lat = _latents(np.random.default_rng(0), 20000)
    y = np.clip(np.rint(_signal(lat, p) + p.noise_std * lat["noise"]), 1, 100)
    assert 35 < y.mean() < 41 and 16 < y.std() < 23
    assert y.min() >= 1 and y.max() <= 100


def test_image_sizes_and_aspect(tmp_path):
    p = SynthParams(seed=0)
    sizes = [Image.open(__import__("io").BytesIO(render_image(0.5, 0.5, s, p))).size for s in range(12)]
    shorts = [min(s) for s in sizes]
    assert min(shorts) >= p.min_side and max(max(s) for s in sizes) <= p.max_long_side
    assert len({w > h for w, h in sizes}) == 2  # both orientations occur


def test_detail_is_invisible_after_an_antialiased_shrink():
    """The fine stripes carry `detail`; a 4x area shrink of the photo at 96 px (the demo's input) loses them."""
    import cv2

    def pet_stats(detail):
        raw = render_image(0.9, detail, 7, SynthParams(seed=0, min_side=512, max_side=512, max_long_side=512))
        img = np.asarray(Image.open(__import__("io").BytesIO(raw)).convert("L"), dtype=np.float32)
        at_96 = cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA)
        at_24 = cv2.resize(at_96, (24, 24), interpolation=cv2.INTER_AREA)
        c96, c24 = at_96[36:60, 36:60], at_24[9:15, 9:15]  # the middle of the pet
        return c96.std(), c24.std(), c24.mean()

    lo, hi = pet_stats(0.0), pet_stats(1.0)
    assert hi[0] > 4 * lo[0] + 5  # at the model's input size the stripes are plain to see
    assert hi[1] < lo[1] + 3  # a quarter of that size they are gone
    assert abs(hi[2] - lo[2]) < 6  # and the pet's mean colour does not give them away


def test_bad_sizes_rejected(tmp_path):
    with pytest.raises(ValueError, match="--train"):
        generate(tmp_path, 1, 1)
    with pytest.raises(ValueError, match="min_side"):
        generate(tmp_path, 4, 1, SynthParams(min_side=300, max_side=200))
