"""The model of every test that trains one: the demo's learned resizer made tiny (32 -> 16 px, 4 filters) in
front of `vit_micro`, a one-block ViT. The tests check plumbing, files and numbers a run writes, not accuracy;
a smaller graph is what makes each fold process (import, trace, a few steps) cheap."""

from __future__ import annotations

# Nothing here imports Keras: conftest imports this module, and collecting tests must stay cheap.
BACKBONE = "vit_micro"
IMAGE_SIZE = 32
MODEL = {"resizer": {"target_size": 16, "filters": 4}, "backbone": {"name": BACKBONE}, "metadata_units": 4,
         "head_units": 8}


def _dotted(tree: dict, prefix: str) -> list[str]:
    return [item for key, value in tree.items()
            for item in (_dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"])]


# The same as `KEY=VALUE` overrides of configs/demo.yaml (or any config), and as the CLI's `--set` arguments.
SETS = (f"data.image_size={IMAGE_SIZE}", *_dotted(MODEL, "model."))
SET_ARGS = tuple(arg for setting in SETS for arg in ("--set", setting))


def shrink_model(tree: dict) -> None:
    """Make a config tree's model the tiny one, in place (the other model keys are kept)."""
    model = tree.setdefault("model", {})
    for key, value in MODEL.items():
        if isinstance(value, dict):
            model.setdefault(key, {}).update(value)
        else:
            model[key] = value
