"""The learnable resizer of Talebi & Milanfar, "Learning to Resize Images for Computer Vision Tasks"
(arXiv 2103.09950, Fig. 2), as one Keras layer.

    x ──────────────────────────── resize ────────────────────────────────┐ (skip)
    x → conv k1×k1 → LReLU → conv 1×1 → LReLU → BN → resize = r ─┐         │
        r → [res block] × B (each fed by the previous one) → conv 3×3 → BN → (+ r) → conv k1×k1 → 3 ch → (+)

A res block is conv 3×3 → BN → LReLU → conv 3×3 → BN, plus its own input. Public copies (keras-io) feed
every block from the bottleneck `r` instead of chaining them; here block i+1 reads block i.
Every resize is antialiased: without it a 512→224 bilinear resize aliases fine detail into moiré, and the
comparison with a plain resize would flatter neither side honestly.
"""

from __future__ import annotations

import contextlib

import keras
from keras import layers, ops

INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest")


def _pair(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return size


def resize_images(x, size: tuple[int, int], interpolation: str):
    # "area" has no antialias flag (it is an average already); the others get one when shrinking.
    antialias = interpolation in ("bilinear", "bicubic")
    dtype = x.dtype
    # TF's antialiased resize (ScaleAndTranslate) has no half-precision gradient: resize in float32 and
    # cast back, so mixed precision trains.
    out = ops.image.resize(ops.cast(x, "float32"), size, interpolation=interpolation, antialias=antialias)
    return ops.cast(out, dtype)


def resize_matrix(n_in: int, n_out: int, interpolation: str):
    """The [n_out, n_in] weights of `resize_images` along one axis, read off the backend's own resize of an
    identity (the other axis stays 1 -> 1, where every kernel is the identity): a separable resize is then
    two matrix products, the same weighted sums as the library's in another order."""
    import numpy as np

    eye = np.eye(n_in, dtype="float32").reshape(1, n_in, 1, n_in)
    return ops.convert_to_numpy(resize_images(eye, (n_out, 1), interpolation))[0, :, 0, :]


# TensorFlow resizes through products only up to this target side: the products do `target` multiply-adds
# per input value where its ScaleAndTranslate kernel visits a few nonzero taps. Measured on this CPU (16
# channels, forward + backward, plus the 3-channel skip forward), products against ScaleAndTranslate:
# 96 -> 24 and 128 -> 32 nearly free against 7-9 ms, 192 -> 48 6.2 against 7.5 ms, 256 -> 64 a tie,
# 384 -> 96 14 against 6.6 ms, 512 -> 224 83 against 14 ms.
TF_PRODUCTS_MAX_TARGET = 64


def resize_plan(in_hw, out_hw: tuple[int, int], interpolation: str):
    """The row and column matrices for `resize_by_matrices` from `in_hw` to `out_hw` where products are
    this backend's faster way to resize, else None (then `resize_images` runs). On JAX always: jax.image's
    resize rebuilds the same matrices inside every step and ran 2x slower, forward + backward, than products
    with them fixed (96 -> 24 and 512 -> 224). Keras's JAX resize has no "area"; TensorFlow's has no
    gradient: both stay with `resize_images`, which refuses or fails as before."""
    in_hw = tuple(in_hw)
    if interpolation == "area" or None in in_hw or in_hw == tuple(out_hw):
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        constants = jax.ensure_compile_time_eval()  # constants even if the layer is built inside a trace
    elif backend == "tensorflow" and max(out_hw) <= TF_PRODUCTS_MAX_TARGET:
        constants = contextlib.nullcontext()
    else:
        return None
    with constants:
        return tuple(resize_matrix(n, t, interpolation) for n, t in zip(in_hw, out_hw, strict=True))


def planned_resize(x, plan, size: tuple[int, int], interpolation: str):
    """`resize_images(x, size, interpolation)`, through `plan`'s products when it was made for x's size."""
    if plan is None or tuple(x.shape[1:3]) != (plan[0].shape[1], plan[1].shape[1]):
        return resize_images(x, size, interpolation)
    return resize_by_matrices(x, *plan)


def resize_by_matrices(x, rows, cols):
    """`resize_images(x, ...)` for `[B, H, W, C]` input as two matrix products: `rows` `[T_h, H]` on the
    `[H, W*C]` slab of every image, then `cols` `[T_w, W]` on the `[W, C]` slab of every output row. The
    same weighted sums as the library's resize, in another order, with no transpose.

    On JAX the products run at the HIGHEST precision jax.image uses (TPUs and GPUs would otherwise round float32
    products through bfloat16 or TF32); TensorFlow's float32 matmuls are exact on CPU and follow its
    TF32 setting on GPU, as every convolution of the model does.
    """
    (t_h, h), (t_w, w) = rows.shape, cols.shape
    c = x.shape[-1]
    y = ops.reshape(ops.cast(x, "float32"), (-1, h, w * c))
    y = _matmul(rows, y)  # [B, T_h, W*C]
    y = _matmul(cols, ops.reshape(y, (-1, w, c)))  # [B*T_h, T_w, C]
    return ops.cast(ops.reshape(y, (-1, t_h, t_w, c)), x.dtype)


def _matmul(a, b):
    """`a @ b` with `a` `[M, K]` broadcast over `b` `[N, K, L]`."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.matmul(a, b)
    return ops.matmul(a, b)


def batch_moments(h, synchronized: bool):
    """`ops.moments(h, axes=(0, 1, 2), synchronized=synchronized)` for float32 `[B, H, W, C]` `h`.

    On TensorFlow this is how `BatchNormalization(synchronized=True)` computes its statistics (sums
    all-reduced over the replicas; E[h], max(E[h^2] - E[h]^2, 0)), the sums as matrix products (forward,
    512 px: 12 -> 6 ms), with the backward pass written out:
    d h = d mean / n + d var * 2 (h - mean) / n is one multiply and one add over h, where TensorFlow's
    automatic gradient broadcasts each statistic's gradient to full resolution and accumulates four
    full-resolution tensors (512 px, 16 channels, batch 4 on this CPU: about 47 -> 17 CPU-ms). Under
    several replicas the statistics' gradients are all-reduced, as the automatic gradient of the
    all-reduce does. XLA (JAX) fuses the plain form.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.moments(h, axes=(0, 1, 2), synchronized=synchronized)
    import tensorflow as tf

    replica = tf.distribute.get_replica_context() if synchronized else None
    if replica is not None and replica.num_replicas_in_sync == 1:
        replica = None

    def all_reduce(*tensors):
        if replica is None:
            return tensors
        return tuple(replica.all_reduce(tf.distribute.ReduceOp.SUM, t) for t in tensors)

    @tf.custom_gradient
    def moments(h):
        # The sums as products over the [pixels, channels] view: a row of ones, and the diagonal of the
        # Gram matrix (one read of h where square-then-sum writes and reads a full-resolution square).
        f = tf.reshape(h, (-1, h.shape[-1]))
        rows = tf.shape(f)[0]
        total = tf.matmul(tf.ones((1, rows), f.dtype), f)[0]
        squares = tf.linalg.diag_part(tf.matmul(f, f, transpose_a=True))
        total, squares, count = all_reduce(total, squares, tf.cast(rows, f.dtype))
        mean = total / count
        raw = squares / count - tf.square(mean)

        def grad(d_mean, d_variance):
            d_mean, d_variance = all_reduce(d_mean, d_variance)
            d_variance = tf.where(raw >= 0.0, d_variance, 0.0)  # tf.maximum passes ties to its first input
            scale = 2.0 * d_variance / count
            return h * scale + (d_mean / count - scale * mean)

        return (mean, tf.maximum(raw, 0.0)), grad

    return moments(h)


@keras.saving.register_keras_serializable(package="lresizervit")
class FixedResize(layers.Layer):
    """A plain (antialiased) resize to `target_size`: the paper's baseline."""

    def __init__(self, target_size, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.target_size = _pair(target_size, "target_size")
        self.interpolation = interpolation

    def build(self, input_shape):
        self._plan = resize_plan(input_shape[1:3], self.target_size, self.interpolation)
        self.built = True

    def call(self, x):
        return planned_resize(x, self._plan, self.target_size, self.interpolation)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "target_size": self.target_size, "interpolation": self.interpolation}


class ResidualBlocks(layers.Layer):
    """Holds the resizer's residual blocks so that every Keras in the supported range saves and loads their
    weights under the same names: block i's four layers are the flat list attribute `container` (i = 0),
    `container_<i>` (i > 0), which are the names Keras 3.15 gave them when the resizer kept a list of tuples
    (so archives written then still load). Keras 3.13 does not walk a tuple inside a list at all: with that
    list of tuples it saved no weight of these blocks and restored none, silently. Never called."""

    def __init__(self, blocks: list[tuple], **kwargs):
        super().__init__(**kwargs)
        self._count = len(blocks)
        for i, block in enumerate(blocks):
            setattr(self, self._attribute(i), list(block))
        self.built = True  # no weights of its own

    @staticmethod
    def _attribute(i: int) -> str:
        return "container" if i == 0 else f"container_{i}"

    def blocks(self) -> list[tuple]:
        return [tuple(getattr(self, self._attribute(i))) for i in range(self._count)]


@keras.saving.register_keras_serializable(package="lresizervit")
class LearnableResizer(layers.Layer):
    """Resizes `[B, H, W, C]` images to `[B, *target_size, C]` through learned convolutions.

    Args:
        target_size: output (height, width) or one int for a square.
        filters: feature maps of every convolution but the last (the paper uses 16).
        num_res_blocks: residual blocks between the resize and the output convolution.
        interpolation: the resize used on the features and on the skip path.
        first_kernel_size: kernel of the first and last convolution (7 in the paper).
        leaky_alpha: negative slope of every LeakyReLU (0.2 in the paper).
        patch_size: if given, target_size must be divisible by it (the backbone's patch size).
        zero_init_output: initialise the last convolution to 0, so the layer starts as the plain resize.
        clip_output: clip the output to [-1, 1] (the range of its input, and of pretrained ViTs' inputs).
    """

    def __init__(
        self,
        target_size,
        filters: int = 16,
        num_res_blocks: int = 1,
        interpolation: str = "bilinear",
        first_kernel_size: int = 7,
        leaky_alpha: float = 0.2,
        patch_size: int | None = None,
        zero_init_output: bool = False,
        clip_output: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.target_size = _pair(target_size, "target_size")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if filters <= 0:
            raise ValueError(f"filters must be positive, got {filters}")
        if num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {num_res_blocks}")
        if patch_size is not None and any(s % patch_size for s in self.target_size):
            raise ValueError(
                f"target size {self.target_size[0]}x{self.target_size[1]} is not divisible by "
                f"patch size {patch_size}"
            )
        self.filters = int(filters)
        self.num_res_blocks = int(num_res_blocks)
        self.interpolation = interpolation
        self.first_kernel_size = int(first_kernel_size)
        self.leaky_alpha = float(leaky_alpha)
        self.patch_size = patch_size
        self.zero_init_output = bool(zero_init_output)
        self.clip_output = bool(clip_output)

    def build(self, input_shape):
        channels = input_shape[-1]
        f, k = self.filters, self.first_kernel_size

        def conv(n, size, name, init="glorot_uniform"):
            return layers.Conv2D(n, size, padding="same", name=name, dtype=self.dtype_policy,
                                 kernel_initializer=init)

        def bn(name):
            # synchronized: under tf.distribute the batch statistics span every replica, so N replicas
            # of batch b train like one device with batch N*b (a no-op on one device). JAX has no such flag
            # and needs none: under keras.distribution the batch is one sharded array, so its mean is global.
            sync = keras.backend.backend() == "tensorflow"
            return layers.BatchNormalization(name=name, dtype=self.dtype_policy, synchronized=sync)

        self.conv_in = conv(f, k, "conv_in")
        self.conv_mix = conv(f, 1, "conv_mix")
        self.bn_in = bn("bn_in")
        self.blocks = ResidualBlocks(
            [(conv(f, 3, f"res{i}_conv_a"), bn(f"res{i}_bn_a"), conv(f, 3, f"res{i}_conv_b"), bn(f"res{i}_bn_b"))
             for i in range(self.num_res_blocks)], name="blocks")
        self.conv_post = conv(f, 3, "conv_post")
        self.bn_post = bn("bn_post")
        self.conv_out = conv(channels, k, "conv_out", "zeros" if self.zero_init_output else "glorot_uniform")

        hw = self.target_size
        self.conv_in.build(input_shape)
        self.conv_mix.build((*input_shape[:-1], f))
        self.bn_in.build((*input_shape[:-1], f))
        small = (input_shape[0], *hw, f)
        for conv_a, bn_a, conv_b, bn_b in self.blocks.blocks():
            conv_a.build(small)
            bn_a.build(small)
            conv_b.build(small)
            bn_b.build(small)
        self.conv_post.build(small)
        self.bn_post.build(small)
        self.conv_out.build(small)
        # Both resizes start at the built input size: products where they are faster (`resize_plan`).
        self._plan = resize_plan(input_shape[1:3], self.target_size, self.interpolation)
        self.built = True

    def _resize(self, x):
        return planned_resize(x, self._plan, self.target_size, self.interpolation)

    def _act(self, x):
        return ops.leaky_relu(x, negative_slope=self.leaky_alpha)

    def _output_conv(self, h):
        """`self.conv_out(h)`. On TensorFlow, for an odd kernel, as the transposed convolution with the
        kernel turned by 180 degrees and its channel axes swapped: the same sums in another order. oneDNN
        runs the backward passes of an F -> 3 channel convolution about 3x slower than those of the
        3 -> F one this form turns them into (7x7, 16 -> 3 channels, batch 4 at 224 px on this CPU: input
        and kernel gradients 32 -> 10 ms, forward unchanged at 23 ms)."""
        conv = self.conv_out
        if keras.backend.backend() != "tensorflow" or self.first_kernel_size % 2 == 0:
            return conv(h)
        import tensorflow as tf

        dtype = self.compute_dtype
        kernel = tf.cast(conv.kernel, dtype)  # [k, k, filters, channels]
        turned = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])  # [k, k, channels, filters]
        shape = tf.concat([tf.shape(h)[:3], [kernel.shape[-1]]], axis=0)
        out = tf.nn.conv2d_transpose(tf.cast(h, dtype), turned, shape, strides=1, padding="SAME")
        return tf.nn.bias_add(out, tf.cast(conv.bias, dtype))

    def _normalize_after_resize(self, h, training):
        """`resize(bn_in(h))`, computed as `bn_in` applied to `resize(h)` with the statistics of `h`.

        Every interpolation's weights for an output pixel sum to 1, so the resize commutes with BatchNorm's
        per-channel affine map: same function, same gradients (up to float rounding), but the normalisation
        and its backward pass run at the target size instead of the full resolution. The statistics, the
        moving averages and the variables are bn_in's own, exactly as `BatchNormalization.call` uses them.
        """
        bn = self.bn_in
        h = ops.cast(h, "float32")  # BatchNormalization computes in float32 under mixed precision too
        if training and bn.trainable:
            mean, variance = batch_moments(h, synchronized=bn.synchronized)
            bn.moving_mean.assign(bn.moving_mean * bn.momentum + mean * (1.0 - bn.momentum))
            bn.moving_variance.assign(bn.moving_variance * bn.momentum + variance * (1.0 - bn.momentum))
        else:
            mean, variance = bn.moving_mean, bn.moving_variance
        r = self._resize(h)
        r = ops.batch_normalization(r, mean, variance, axis=-1, offset=bn.beta, scale=bn.gamma,
                                    epsilon=bn.epsilon)
        return ops.cast(r, self.compute_dtype)

    def call(self, x, training=None):
        skip = self._resize(x)
        h = self._act(self.conv_in(x))
        h = self._act(self.conv_mix(h))
        r = self._normalize_after_resize(h, training)
        h = r
        for conv_a, bn_a, conv_b, bn_b in self.blocks.blocks():
            y = self._act(bn_a(conv_a(h), training=training))
            h = h + bn_b(conv_b(y), training=training)
        h = self.bn_post(self.conv_post(h), training=training) + r
        out = self._output_conv(h) + skip
        # The skip path is in the input's range; the learned residual is not. A pretrained backbone saw
        # only [-1, 1] in training, so clipping keeps it in the regime its weights know.
        return ops.clip(out, -1.0, 1.0) if self.clip_output else out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_size, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "target_size": self.target_size,
            "filters": self.filters,
            "num_res_blocks": self.num_res_blocks,
            "interpolation": self.interpolation,
            "first_kernel_size": self.first_kernel_size,
            "leaky_alpha": self.leaky_alpha,
            "patch_size": self.patch_size,
            "zero_init_output": self.zero_init_output,
            "clip_output": self.clip_output,
        }


@keras.saving.register_keras_serializable(package="lresizervit")
class ConvAfterResize(LearnableResizer):
    """Control for ablations: a plain resize to `target_size` first, then every layer of the learnable
    resizer at the target size (the inner resizes become identities).

    Same weights and parameter count as `LearnableResizer`, but the convolutions never see the full
    resolution: a gain of `learned` over this control comes from the full-resolution view, not from
    having more layers.
    """

    def build(self, input_shape):
        super().build((input_shape[0], *self.target_size, input_shape[-1]))

    def call(self, x, training=None):
        return super().call(resize_images(x, self.target_size, self.interpolation), training=training)


def expected_resizer_params(filters: int, num_res_blocks: int, channels: int = 3, k: int = 7) -> int:
    """Weight count the architecture implies (BN counts gamma, beta, moving mean and variance)."""
    f = filters
    conv_in = k * k * channels * f + f
    conv_mix = f * f + f
    bn = 4 * f
    res = num_res_blocks * 2 * (9 * f * f + f + 4 * f)
    post = 9 * f * f + f + 4 * f
    out = k * k * f * channels + channels
    return conv_in + conv_mix + bn + res + post + out
