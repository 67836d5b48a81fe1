"""The model of every test that trains one: the demo's learned resizer made tiny (32 -> 16 px, 4 filters) in
front of `vit_micro`, a one-block ViT. The tests check plumbing, files and numbers a run writes, not accuracy;
a smaller graph is what makes each fold process (import, trace, a few steps) cheap."""

from __future__ import annotations

# Nothing here imports Keras: conftest imports this module, and collecting tests must stay cheap.
BACKBONE = "vit_micro"
IMAGE_SIZE = 32
MODEL = {"resizer": {"target_size": 16, "filters": 4}, "backbone": {"name": BACKBONE}, "metadata_units": 4,
         "head_units": 8}
# The same as `--set` overrides of configs/demo.yaml (or any config).
SETS = (f"data.image_size={IMAGE_SIZE}", "model.resizer.target_size=16", "model.resizer.filters=4",
        f"model.backbone.name={BACKBONE}", "model.metadata_units=4", "model.head_units=8")


def shrink_model(tree: dict) -> dict:
    """Make a config tree's model the tiny one, in place (the other model keys are kept); returns the tree."""
    model = tree.setdefault("model", {})
    for key, value in MODEL.items():
        if isinstance(value, dict):
            model.setdefault(key, {}).update(value)
        else:
            model[key] = value
    return tree
