"""The fine-tuning optimizer: AdamW with a learning rate per group of variables.

A pretrained backbone wants a small learning rate (published Pawpularity fine-tunes used about 1e-5) while
the layers that start from scratch (the resizer, the metadata branch, the head) want a larger one; deeper
transformer blocks may want more than earlier ones (layer-wise decay); and the new layers may need a few
epochs alone before the backbone moves at all. Keras optimizers have one learning rate, and Adam's step
does not scale with the gradient, so scaling gradients cannot do this: the learning rate itself is
multiplied per variable inside the update.

Freezing is a multiplier of 0 until `unfreeze_step`, compared with the optimizer's own step counter, so a
fold killed during the frozen epochs and resumed from its backup (which restores that counter) switches at
the same step as an uninterrupted run. The frozen backbone's forward and backward passes are still
computed; BatchNorm statistics of a CNN backbone still follow the data.
"""

from __future__ import annotations

import re

import keras
from keras import ops

# Variables that get no weight decay: shrinking norms, biases and embeddings towards 0 is not regularisation.
DECAY_EXCLUDED = ("bias", "gamma", "beta", "class_token", "position_embedding")
# Parts of a variable's path that sit below every block (layer 0 of the layer-wise decay).
_EMBEDDING_WORDS = ("embed", "patch", "class_token", "cls_token", "position", "mask_token", "stem", "conv1_")
# A numbered block in a path component: transformer_block_3, layers_0, stage_1/blocks_0, stack0_block1, ...
_BLOCK = re.compile(r"(?:^|_)(?:transformer_block|encoder_block|blocks|block|layers|layer|stage|stack)_?(\d+)(?=$|_)")

@keras.saving.register_keras_serializable(package="lresizervit")
class GroupedAdamW(keras.optimizers.Adam):
    """AdamW whose learning rate (and so its decoupled weight decay) is multiplied per variable.

    `multipliers` maps a variable's path to its factor (a path not listed gets 1); `frozen` lists paths
    whose factor is 0 while `iterations < unfreeze_step`; `decay_excluded` lists name fragments that get no
    weight decay (norms, biases, embeddings), as `exclude_from_weight_decay` does for AdamW.
    """

    def __init__(self, learning_rate=0.001, weight_decay: float = 0.004, multipliers: dict | None = None,
                 frozen: list | tuple = (), unfreeze_step: int = 0, decay_excluded: list | tuple = (), **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.decoupled_weight_decay = float(weight_decay)
        self.multipliers = {str(k): float(v) for k, v in (multipliers or {}).items()}
        self.frozen = [str(p) for p in frozen]
        self.unfreeze_step = int(unfreeze_step)
        self.decay_excluded = [str(p) for p in decay_excluded]

    def build(self, var_list):
        super().build(var_list)
        frozen = set(self.frozen)
        # Indexed like Adam's own slots: update_step may receive the backend's variable, not ours.
        self._factor = [self.multipliers.get(v.path, 1.0) for v in var_list]
        self._is_frozen = [v.path in frozen for v in var_list]
        self._decays = [not any(f in v.path for f in self.decay_excluded) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype) * self._factor[i]
        if self._is_frozen[i]:
            lr = ops.where(ops.less(self.iterations, self.unfreeze_step), ops.zeros_like(lr), lr)
        if self.decoupled_weight_decay and self._decays[i]:
            variable.assign(variable - variable * ops.cast(self.decoupled_weight_decay, variable.dtype) * lr)
        super().update_step(gradient, variable, lr)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.decoupled_weight_decay,
                "multipliers": self.multipliers, "frozen": self.frozen, "unfreeze_step": self.unfreeze_step,
                "decay_excluded": self.decay_excluded}


def block_depths(paths: list[str]) -> dict[str, int]:
    """Each backbone variable's depth for layer-wise decay: 0 for embeddings and stems, 1..L for the numbered
    blocks in order (their numbers sorted as tuples, e.g. stage_1/blocks_0 after stage_0/blocks_1), L + 1
    for the rest (the final norm, a pooling head)."""
    keys = {p: tuple(int(m.group(1)) for part in p.split("/") for m in _BLOCK.finditer(part)) for p in paths}
    order = {k: i + 1 for i, k in enumerate(sorted({k for k in keys.values() if k}))}
    top = len(order) + 1
    out = {}
    for p, k in keys.items():
        if k:
            out[p] = order[k]
        elif any(w in p.lower() for w in _EMBEDDING_WORDS):
            out[p] = 0
        else:
            out[p] = top
    return out


def backbone_multipliers(paths: list[str], ratio: float, layer_decay: float) -> dict[str, float]:
    """`ratio` (backbone lr / new layers' lr) times layer_decay ** (top depth - depth) per variable."""
    depths = block_depths(paths)
    top = max(depths.values(), default=0)
    return {p: ratio * layer_decay ** (top - d) for p, d in depths.items()}
