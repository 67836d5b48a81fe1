"""load_image: every kind of file a Kaggle image folder can hold, and every way it can be broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lresizervit.data.decode import ImageDecodeError, load_image, resize_short_side

ORIENTATION = 0x0112


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> str:
    img.save(path, format=fmt, **kwargs)
    return str(path)


def _check(out: np.ndarray, short_side: int) -> None:
    assert out.dtype == np.uint8
    assert out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) == short_side
    assert out.flags.c_contiguous and out.flags.writeable


@pytest.mark.parametrize(
    ("h", "w", "short_side", "expected"),
    [
        (200, 300, 100, (100, 150)),  # shrink, landscape
        (300, 200, 100, (150, 100)),  # shrink, portrait
        (60, 90, 128, (128, 192)),  # small image: upsampled, too
        (200, 300, 200, (200, 300)),  # already the right size
        (600, 800, 128, (128, 171)),  # large enough for the reduced-scale JPEG decode
    ],
)
def test_jpeg_resized_to_short_side_keeping_aspect(tmp_path, h, w, short_side, expected):
    path = _save(Image.fromarray(_noise(h, w)), tmp_path / "a.jpg")
    out = load_image(path, short_side)
    _check(out, short_side)
    assert out.shape[:2] == expected


def test_reduced_scale_decode_keeps_the_content(tmp_path):
    """The draft (DCT-scaled) decode must give what a full decode + area resize gives, up to JPEG noise."""
    yy, xx = np.mgrid[0:600, 0:800]
    smooth = np.stack([xx * 255 // 799, yy * 255 // 599, (xx + yy) * 255 // 1398], axis=-1).astype(np.uint8)
    path = _save(Image.fromarray(smooth), tmp_path / "smooth.jpg", quality=95)
    out = load_image(path, 128)
    with Image.open(path) as full:
        reference = resize_short_side(np.asarray(full.convert("RGB")), 128)
    assert out.shape == reference.shape == (128, 171, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 3.0


def test_grayscale_jpeg(tmp_path):
    path = _save(Image.fromarray(_noise(200, 300)[:, :, 0], mode="L"), tmp_path / "grey.jpg")
    out = load_image(path, 100)
    _check(out, 100)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (300, 200), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(cmyk, tmp_path / "cmyk.jpg")
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    out = load_image(path, 100)
    _check(out, 100)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_png_bytes_under_jpg_name(tmp_path):
    rgb = _noise(60, 90)
    path = _save(Image.fromarray(rgb), tmp_path / "really_a_png.jpg", fmt="PNG")
    out = load_image(path, 60)
    assert np.array_equal(out, rgb)  # lossless PNG at its own size: bit-exact


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "RGBA", "I;16"])
def test_png_modes_become_rgb(tmp_path, mode):
    img = Image.fromarray(_noise(60, 90)).convert("RGBA" if mode in ("LA", "RGBA") else "RGB")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(np.full((60, 90), 65535, np.uint16))
    path = _save(img, tmp_path / f"{mode.replace(';', '_')}.png")
    out = load_image(path, 30)
    _check(out, 30)
    if mode == "I;16":
        assert out.min() == 255  # 16-bit white stays white instead of clipping to garbage


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
    path = _save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "alpha.png")
    assert (load_image(path, 40) == 255).all()


def _two_colour_with_exif(tmp_path: Path, h: int, w: int, orientation: int) -> str:
    """Stored landscape image: left half red, right half blue, with an EXIF orientation tag."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2, 0] = 255
    arr[:, w // 2 :, 2] = 255
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return _save(Image.fromarray(arr), tmp_path / f"exif{orientation}.jpg", exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize(("h", "w", "short_side"), [(200, 300, 100), (400, 800, 100)])
def test_exif_orientation_6_is_rotated_to_portrait(tmp_path, h, w, short_side):
    # (400, 800) is large enough for the reduced-scale decode: draft and rotation must compose.
    path = _two_colour_with_exif(tmp_path, h, w, orientation=6)
    out = load_image(path, short_side)
    _check(out, short_side)
    assert out.shape[:2] == (w * short_side // h, short_side)  # portrait after the rotation
    # Orientation 6 = rotate 90 degrees clockwise to display: the stored left (red) half ends up on top.
    top, bottom = out[: out.shape[0] // 4], out[-out.shape[0] // 4 :]
    assert top[..., 0].mean() > 200 and top[..., 2].mean() < 60
    assert bottom[..., 2].mean() > 200 and bottom[..., 0].mean() < 60


def test_truncated_jpeg_raises_with_path(tmp_path):
    full = tmp_path / "full.jpg"
    _save(Image.fromarray(_noise(200, 300)), full)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        load_image(str(truncated), 100)


@pytest.mark.parametrize("short_side", [64, 200])
def test_truncated_large_jpeg_raises_at_any_decode_scale(tmp_path, short_side):
    full = tmp_path / "big.jpg"
    _save(Image.fromarray(_noise(600, 800)), full)
    truncated = tmp_path / "big_truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match="big_truncated.jpg"):
        load_image(str(truncated), short_side)


def test_text_file_named_jpg_raises_with_path(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        load_image(str(path), 64)


def test_missing_file_raises_with_path(tmp_path):
    path = tmp_path / "missing" / "0a1b2c.jpg"
    with pytest.raises(ImageDecodeError, match="0a1b2c.jpg") as info:
        load_image(path, 64)  # PathLike accepted too
    assert isinstance(info.value, ValueError)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg"):
        load_image(str(path), 64)


@pytest.mark.parametrize("short_side", [0, -3, 1.5])
def test_bad_short_side_is_a_plain_value_error(tmp_path, short_side):
    path = _save(Image.fromarray(_noise(20, 30)), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="short_side") as info:
        load_image(path, short_side)
    assert not isinstance(info.value, ImageDecodeError)


@pytest.mark.parametrize(("short_side", "decoded"), [(128, (200, 150)), (160, (400, 300)), (600, (800, 600))])
def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path, monkeypatch, short_side, decoded):
    """The speed feature: libjpeg decodes 800x600 at 1/4 for S=128, never below S, full size when needed."""
    from PIL import JpegImagePlugin

    sizes: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    path = _save(Image.fromarray(_noise(600, 800)), tmp_path / "big.jpg")
    out = load_image(path, short_side)
    assert sizes == [decoded]
    _check(out, short_side)


@pytest.mark.parametrize(
    ("h", "w", "short_side"),
    [
        (1, 500, 16),
        (500, 1, 16),
        (333, 999, 128),
        (999, 333, 127),
        (129, 130, 128),
        (127, 500, 128),
        (2, 3, 1),
    ],
)
def test_resize_short_side_is_exact_for_any_shape(h, w, short_side):
    out = resize_short_side(_noise(h, w), short_side)
    assert min(out.shape[:2]) == short_side and out.dtype == np.uint8
    assert abs(out.shape[1] / out.shape[0] - w / h) <= max(w / h, h / w) / short_side + 1e-9  # aspect kept
