"""The training augmentations' parameters, defined once for both implementations.

``augment`` builds them as albumentations ops, ``augment_tf`` as TF-only ops (TPU input hosts). Both read
these values, so the two cannot drift apart; this module imports neither albumentations nor TensorFlow, so
the TF-only path runs where albumentations is not installed.
"""

from __future__ import annotations

__all__ = [
    "COARSE_DROPOUT_P",
    "COLOR_JITTER_P",
    "CROP_SCALE_MIN",
    "DROPOUT_FILL",
    "DROPOUT_HOLES",
    "DROPOUT_HOLE_FRACTION",
    "HFLIP_P",
    "JITTER_BRIGHTNESS",
    "JITTER_CONTRAST",
    "JITTER_HUE",
    "JITTER_SATURATION",
    "train_params",
]

# The tunables (config ``augment.*``): their defaults.
# Smallest random square crop, as a fraction of the square image's area.
CROP_SCALE_MIN = 0.6
HFLIP_P = 0.5
COLOR_JITTER_P = 0.5
COARSE_DROPOUT_P = 0.3

# Fixed. Mild colour changes only: Pawpularity is about how the photo looks, so strong jitter changes the
# label. Each factor is drawn from 1 +- strength; the hue shift from +- JITTER_HUE of a full turn.
JITTER_BRIGHTNESS = 0.2
JITTER_CONTRAST = 0.2
JITTER_SATURATION = 0.2
JITTER_HUE = 0.02
# Coarse dropout: this many holes (inclusive range), each side this fraction of the image's side.
DROPOUT_HOLES = (1, 4)
DROPOUT_HOLE_FRACTION = (0.05, 0.15)
DROPOUT_FILL = 0


def train_params(
    *,
    crop_scale_min: float = CROP_SCALE_MIN,
    hflip_p: float = HFLIP_P,
    color_jitter_p: float = COLOR_JITTER_P,
    coarse_dropout_p: float = COARSE_DROPOUT_P,
) -> dict[str, float]:
    """The tunables, checked, with the defaults filled in: the keyword arguments both implementations take."""
    if not 0.0 < crop_scale_min <= 1.0:
        raise ValueError(f"crop_scale_min must be in (0, 1], got {crop_scale_min}")
    for name, p in (
        ("hflip_p", hflip_p),
        ("color_jitter_p", color_jitter_p),
        ("coarse_dropout_p", coarse_dropout_p),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return {
        "crop_scale_min": crop_scale_min,
        "hflip_p": hflip_p,
        "color_jitter_p": color_jitter_p,
        "coarse_dropout_p": coarse_dropout_p,
    }
