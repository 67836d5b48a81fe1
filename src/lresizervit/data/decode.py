"""Decode one image file into an RGB uint8 array whose shorter side has a fixed length.

This is the loader's hot path: real photos are 400-1280 px while the model looks at 128-512 px, so JPEGs are
decoded at a reduced scale by libjpeg itself (``Image.draft``) before the final, exact resize.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageDecodeError", "decode_image", "load_image", "resize_short_side"]

# Modes that carry an alpha channel (or a transparent palette entry): flattened over white, because the RGB
# values under fully transparent pixels are arbitrary (often black) and would otherwise leak into the photo.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Integer / float single-channel modes whose range is not 0..255: a plain convert("RGB") would clip them.
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


# Shrink factors from here on use INTER_AREA; below it (and above 1) bilinear, see resize_short_side.
_AREA_MIN_RATIO = 2.0


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded; the message names the file."""


def load_image(path: str | os.PathLike[str], short_side: int) -> np.ndarray:
    """Read ``path`` as RGB uint8 ``[H, W, 3]`` with ``min(H, W) == short_side``, keeping the aspect ratio.

    The format is sniffed from the content, not the extension; EXIF orientation is applied. Any failure to
    read or decode raises ``ImageDecodeError`` whose message contains the path.
    """
    if int(short_side) != short_side or short_side < 1:
        raise ValueError(f"short_side must be a positive integer, got {short_side!r}")
    short_side = int(short_side)
    return resize_short_side(decode_image(path, short_side), short_side)


def decode_image(path: str | os.PathLike[str], min_side: int) -> np.ndarray:
    """Decode ``path`` as RGB uint8 ``[H, W, 3]`` at the smallest scale the format allows that keeps
    ``min(H, W) >= min_side`` (JPEG: 1/2, 1/4 or 1/8 by libjpeg; other formats: full size), EXIF-rotated.

    Every byte of the file is decoded, so a truncated file fails here; errors as in :func:`load_image`.
    """
    path_str = os.fspath(path)
    try:
        with Image.open(path_str) as img:
            # draft() only promises each side >= the request, in the stored orientation; asking for a square
            # of min_side keeps the stored shorter side >= min_side, which stays true after any EXIF
            # rotation. A no-op for non-JPEG formats.
            img.draft("RGB", (min_side, min_side))
            # load() inside the try: without it a truncated JPEG is only noticed later (or, with
            # LOAD_TRUNCATED_IMAGES, silently padded with grey).
            img.load()
            # in_place: the common no-orientation case would otherwise cost a full copy of the image.
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise ImageDecodeError(f"cannot decode image {path_str!r}: {type(exc).__name__}: {exc}") from exc


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize ``image`` so that its shorter side equals ``short_side``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    if min(h, w) == short_side:
        return np.ascontiguousarray(image)
    if h <= w:
        new_h, new_w = short_side, max(short_side, round(w * short_side / h))
    else:
        new_h, new_w = max(short_side, round(h * short_side / w)), short_side
    ratio = min(h, w) / short_side
    if ratio >= _AREA_MIN_RATIO:
        # A real decimation: INTER_AREA averages all source pixels, where bilinear would skip some (aliasing).
        interpolation = cv2.INTER_AREA
    elif ratio > 1:
        # Left over after a reduced-scale JPEG decode (always < 2x). OpenCV's INTER_AREA takes a slow generic
        # path for non-integer ratios: 250 us vs 40 us for 200x150 -> 171x128, a quarter of a whole
        # load_image call; bilinear at < 2x barely aliases.
        interpolation = cv2.INTER_LINEAR
    else:
        # Enlarging a small photo: cubic is sharper than bilinear; INTER_AREA would be nearest-like blocks.
        interpolation = cv2.INTER_CUBIC
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to a writable, contiguous uint8 ``[H, W, 3]`` array."""
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    elif mode in _WIDE_MODES:
        return _wide_to_rgb(np.asarray(img), mode)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX ...
    # np.array (not asarray) copies: PIL's buffer view is read-only and consumers may write in place.
    return np.array(img, dtype=np.uint8)


def _wide_to_rgb(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16/32-bit integer or float grey image into 0..255 and replicate it over 3 channels."""
    values = values.astype(np.float32)
    if mode.startswith("I;16"):
        values = values / 257.0
    elif mode == "F" and values.size and float(values.max()) <= 1.0:
        values = values * 255.0  # float images are conventionally in [0, 1]
    elif values.size and float(values.max()) > 255.0:
        values = values / 257.0  # 32-bit "I" mostly holds 16-bit samples (e.g. from PNG)
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
