"""A native Keras 3 Vision Transformer (Dosovitskiy et al., arXiv 2010.11929) and its registry of variants.

Pre-norm blocks (LayerNorm → multi-head self-attention → residual, LayerNorm → GELU MLP → residual), a
class token and learned position embeddings, as in the paper. Only `keras.layers` / `keras.ops` are used,
so the model is backend-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers, ops


@dataclass(frozen=True)
class ViTSpec:
    patch_size: int
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int


# The paper's Table 1 (Ti and S from DeiT), plus a tiny one that trains on a laptop CPU in minutes and a
# one-block one for smoke runs (the test suite trains it: its train step traces in a fraction of the time).
VIT_VARIANTS: dict[str, ViTSpec] = {
    "vit_tiny_demo": ViTSpec(patch_size=4, hidden_dim=64, depth=4, num_heads=4, mlp_dim=128),
    "vit_micro": ViTSpec(patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32),
    "vit_ti16": ViTSpec(patch_size=16, hidden_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_s16": ViTSpec(patch_size=16, hidden_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_b16": ViTSpec(patch_size=16, hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_b8": ViTSpec(patch_size=8, hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_l16": ViTSpec(patch_size=16, hidden_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
}


def get_vit_spec(name: str) -> ViTSpec:
    if name not in VIT_VARIANTS:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(VIT_VARIANTS)}")
    return VIT_VARIANTS[name]


@keras.saving.register_keras_serializable(package="lresizervit")
class PatchEmbedding(layers.Layer):
    """Non-overlapping patches → linear projection, prepend a class token, add position embeddings.

    The position embeddings are a grid for `image_size`; an input of another size (divisible by the patch)
    gets them bicubically interpolated, as the ViT paper does when fine-tuning at a higher resolution.
    """

    def __init__(self, image_size: int, patch_size: int, hidden_dim: int, **kwargs):
        super().__init__(**kwargs)
        if image_size % patch_size:
            raise ValueError(f"target size {image_size} is not divisible by patch size {patch_size}")
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2

    def _input_grid(self, input_shape) -> tuple[int, int]:
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("PatchEmbedding needs a static input height and width")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not divisible by patch size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def build(self, input_shape):
        self._input_grid(input_shape)
        self.projection = layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size, name="projection",
            dtype=self.dtype_policy,
        )
        self.projection.build(input_shape)
        self.class_token = self.add_weight(
            shape=(1, 1, self.hidden_dim), initializer="zeros", name="class_token"
        )
        self.position_embedding = self.add_weight(
            shape=(1, self.num_patches + 1, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding",
        )
        self.built = True

    def _positions(self, grid_h: int, grid_w: int, dtype):
        pos = ops.cast(self.position_embedding, dtype)
        if (grid_h, grid_w) == (self.grid, self.grid):
            return pos
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = ops.reshape(patch_pos, (1, self.grid, self.grid, self.hidden_dim))
        patch_pos = ops.image.resize(ops.cast(patch_pos, "float32"), (grid_h, grid_w), interpolation="bicubic")
        patch_pos = ops.cast(ops.reshape(patch_pos, (1, grid_h * grid_w, self.hidden_dim)), dtype)
        return ops.concatenate([cls_pos, patch_pos], axis=1)

    def call(self, images):
        grid_h, grid_w = self._input_grid(images.shape)
        x = self.projection(images)
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, grid_h * grid_w, self.hidden_dim))
        cls = ops.broadcast_to(ops.cast(self.class_token, x.dtype), (batch, 1, self.hidden_dim))
        x = ops.concatenate([cls, x], axis=1)
        return x + self._positions(grid_h, grid_w, x.dtype)

    def compute_output_shape(self, input_shape):
        grid_h, grid_w = self._input_grid(input_shape)
        return (input_shape[0], grid_h * grid_w + 1, self.hidden_dim)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim}


@keras.saving.register_keras_serializable(package="lresizervit")
class TransformerBlock(layers.Layer):
    def __init__(self, hidden_dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)

    def build(self, input_shape):
        p = self.dtype_policy
        self.norm_attn = layers.LayerNormalization(epsilon=1e-6, name="norm_attn", dtype=p)
        self.attn = layers.MultiHeadAttention(
            self.num_heads, self.hidden_dim // self.num_heads, dropout=self.dropout, name="attn", dtype=p
        )
        self.norm_mlp = layers.LayerNormalization(epsilon=1e-6, name="norm_mlp", dtype=p)
        self.mlp_in = layers.Dense(self.mlp_dim, activation="gelu", name="mlp_in", dtype=p)
        self.mlp_out = layers.Dense(self.hidden_dim, name="mlp_out", dtype=p)
        self.drop = layers.Dropout(self.dropout, dtype=p)  # else, reloaded under float32, it casts bf16 back
        self.norm_attn.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.norm_mlp.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_dim))
        self.built = True

    def call(self, x, training=None):
        h = self.norm_attn(x)
        x = x + self.drop(self.attn(h, h, training=training), training=training)
        h = self.mlp_out(self.drop(self.mlp_in(self.norm_mlp(x)), training=training))
        return x + self.drop(h, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim, "dropout": self.dropout}


def build_vit(
    name: str, image_size: int, pooling: str = "cls", dropout: float = 0.0, position_grid_size: int | None = None
) -> keras.Model:
    """A ViT feature extractor: `[B, S, S, 3]` in [-1, 1] → `[B, hidden_dim]`.

    `position_grid_size` is the image size the position embeddings are made for (default: `image_size`);
    e.g. weights made for 224 can run at 512, their position embeddings interpolated.
    """
    spec = get_vit_spec(name)
    if pooling not in ("cls", "gap"):
        raise ValueError(f"pooling must be 'cls' or 'gap', got {pooling!r}")
    if image_size % spec.patch_size:
        raise ValueError(f"target size {image_size} is not divisible by patch size {spec.patch_size}")
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = PatchEmbedding(position_grid_size or image_size, spec.patch_size, spec.hidden_dim,
                       name="patch_embedding")(inputs)
    for i in range(spec.depth):
        x = TransformerBlock(spec.hidden_dim, spec.num_heads, spec.mlp_dim, dropout, name=f"block_{i}")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    x = x[:, 0] if pooling == "cls" else ops.mean(x[:, 1:], axis=1)
    return keras.Model(inputs, x, name=name)
