"""The learnable resizer's faster formulation computes what the plain one does.

`LearnableResizer.call` applies bn_in's normalisation after the feature resize (with the full-resolution
batch statistics) instead of before it, and resizes through two products with matrices read off the
backend's own resize at build time (on JAX always, on TensorFlow up to a 64 px target). `plain_call` below is the straightforward formulation, as the layer
computed it before that change, on the same sublayers and variables; every test compares the two on the
backend the test session runs under (run it with KERAS_BACKEND=jax as well as the default).

Tolerance (float32): outputs within 2e-5 absolute + 1e-5 relative; every gradient entry within 1e-5 of the
largest gradient entry over all variables (measured: at most 2e-6 on either backend; a bias ahead of a
BatchNorm in training mode has a true gradient of 0, so its computed one is rounding alone and needs a
scale from outside it); moving statistics within 1e-6.
"""

import keras
import numpy as np
import pytest
from keras import ops

from lresizervit.models.resizer import (
    INTERPOLATIONS,
    TF_PRODUCTS_MAX_TARGET,
    FixedResize,
    LearnableResizer,
    batch_moments,
    resize_images,
    resize_plan,
)


def plain_call(layer: LearnableResizer, x, training=None):
    """The reference: BatchNorm at full resolution, then the resize (the pre-change `call`)."""
    x = ops.cast(x, layer.compute_dtype)  # what Layer.__call__ does to the input before `call`
    skip = resize_images(x, layer.target_size, layer.interpolation)
    h = layer._act(layer.conv_in(x))
    h = layer._act(layer.conv_mix(h))
    h = layer.bn_in(h, training=training)
    r = resize_images(h, layer.target_size, layer.interpolation)
    h = r
    for conv_a, bn_a, conv_b, bn_b in layer.blocks.blocks():
        y = layer._act(bn_a(conv_a(h), training=training))
        h = h + bn_b(conv_b(y), training=training)
    h = layer.bn_post(layer.conv_post(h), training=training) + r
    out = layer.conv_out(h) + skip
    return ops.clip(out, -1.0, 1.0) if layer.clip_output else out


def make_layer(target, input_shape, seed=0, **kwargs) -> LearnableResizer:
    """A built resizer whose BatchNorms hold non-trivial gamma, beta and moving statistics (a fresh one has
    gamma 1, beta 0, mean 0, variance 1, which would hide a mix-up between them). Its convolutions' initial
    weights come from `seed` too, not from whatever the worker's tests before left in Keras's generator: the
    float32 gradients below agree to 1e-5 of their scale for most weights (over 60 draws, 2026-12-07: median
    1.7e-6, largest 9.5e-6) but not all (one draw in `make test`, after other tests: 1.6e-5)."""
    keras.utils.set_random_seed(seed)
    layer = LearnableResizer(target, filters=4, **kwargs)
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    for bn in [layer.bn_in, layer.bn_post] + [b for blk in layer.blocks.blocks() for b in (blk[1], blk[3])]:
        f = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2.0, f), rng.normal(0, 0.5, f), rng.normal(0, 0.3, f),
                        rng.uniform(0.2, 3.0, f)])
    return layer


def inputs(shape, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def loss_and_grads(layer, fn, x, cotangent, training):
    """sum(fn(layer, x) * cotangent), its gradients w.r.t. the layer's trainable variables (in their order)
    and the non-trainable variables' values after the call; the layer's own variables are left as they were."""
    trainable = layer.trainable_variables
    non_trainable = layer.non_trainable_variables
    if keras.backend.backend() == "jax":
        import jax

        def loss(tv, ntv):
            with keras.StatelessScope(state_mapping=list(zip(trainable + non_trainable, tv + ntv, strict=True))) as scope:
                out = fn(layer, x, training=training)
            new = [scope.get_current_value(v) for v in non_trainable]
            new = [n if n is not None else old for n, old in zip(new, ntv, strict=True)]
            return ops.sum(out * cotangent), (out, new)

        (value, (out, new)), grads = jax.value_and_grad(loss, has_aux=True)(
            [v.value for v in trainable], [v.value for v in non_trainable])
        return [np.asarray(a) for a in (value, out)], [np.asarray(g) for g in grads], [np.asarray(v) for v in new]
    import tensorflow as tf

    before = [v.numpy() for v in non_trainable]
    with tf.GradientTape() as tape:
        out = fn(layer, x, training=training)
        value = tf.reduce_sum(out * cotangent)
    grads = tape.gradient(value, [v.value for v in trainable])
    new = [v.numpy() for v in non_trainable]
    for v, b in zip(non_trainable, before, strict=True):
        v.assign(b)
    return [value.numpy(), out.numpy()], [g.numpy() for g in grads], new


def assert_same(layer, x, training, atol=2e-5):
    cot = inputs((x.shape[0], *layer.target_size, x.shape[-1]), seed=7)
    (v_ref, out_ref), g_ref, s_ref = loss_and_grads(layer, plain_call, x, cot, training)
    (v_new, out_new), g_new, s_new = loss_and_grads(layer, lambda lyr, x, training: lyr(x, training=training),
                                                    x, cot, training)
    np.testing.assert_allclose(out_new, out_ref, rtol=1e-5, atol=atol)
    assert len(g_new) == len(g_ref) == len(layer.trainable_variables)
    scale = max(float(np.abs(g).max()) for g in g_ref)
    for var, a, b in zip(layer.trainable_variables, g_new, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale, err_msg=var.path)
    for var, a, b in zip(layer.non_trainable_variables, s_new, s_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=var.path)
    return s_ref


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_resize_has_weights_summing_to_one(interpolation):
    """What the reformulation rests on: resize(a*h + c) == a*resize(h) + c per channel."""
    if interpolation == "area" and keras.backend.backend() != "tensorflow":
        pytest.skip("Keras's JAX backend has no 'area' resize")
    h = inputs((2, 23, 30, 4))
    a, c = np.array([0.5, -2.0, 3.0, 1.5], "float32"), np.array([0.1, 2.0, -1.0, 0.0], "float32")
    lhs = ops.convert_to_numpy(resize_images(h * a + c, (7, 12), interpolation))
    rhs = ops.convert_to_numpy(resize_images(h, (7, 12), interpolation)) * a + c
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,target", [
    ((2, 32, 32, 3), 8),              # even, square
    ((2, 33, 33, 3), 11),             # odd, square
    ((3, 30, 21, 3), (12, 7)),        # non-square, one side odd
])
def test_outputs_gradients_and_moving_stats_match_the_plain_formulation(shape, target, training):
    layer = make_layer(target, shape, num_res_blocks=1)
    moving = assert_same(layer, inputs(shape), training)
    bn_mean = layer.non_trainable_variables.index(layer.bn_in.moving_mean)
    if training:  # the batch statistics did move the averages, as BatchNormalization does
        assert not np.allclose(moving[bn_mean], ops.convert_to_numpy(layer.bn_in.moving_mean))
    else:
        np.testing.assert_array_equal(moving[bn_mean], ops.convert_to_numpy(layer.bn_in.moving_mean))


def test_a_target_past_the_product_limit_matches_as_well():
    """On TensorFlow a target side over TF_PRODUCTS_MAX_TARGET resizes through ScaleAndTranslate again."""
    shape = (1, 80, 75, 3)
    target = (TF_PRODUCTS_MAX_TARGET + 2, 70)
    layer = make_layer(target, shape, num_res_blocks=0)
    assert (layer._plan is None) == (keras.backend.backend() == "tensorflow")
    assert_same(layer, inputs(shape), True)


@pytest.mark.parametrize("kernel", [5, 4])
def test_odd_and_even_first_kernels_match(kernel):
    """conv_out runs as a transposed convolution on TensorFlow for an odd kernel; an even one (asymmetric
    "same" padding) keeps the layer's own call."""
    shape = (2, 24, 20, 3)
    assert_same(make_layer((8, 4), shape, first_kernel_size=kernel), inputs(shape), True)


def test_resize_plan_takes_products_where_they_are_faster():
    plan = resize_plan((96, 90), (24, 30), "bilinear")
    assert [m.shape for m in plan] == [(24, 96), (30, 90)]
    for m in plan:  # every output pixel's weights sum to 1
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    past = resize_plan((512, 512), (224, 224), "bilinear")
    assert (past is None) == (keras.backend.backend() == "tensorflow")
    assert resize_plan((96, 96), (96, 96), "bilinear") is None  # nothing to resize
    assert resize_plan((None, None), (24, 24), "bilinear") is None  # size known only at call time
    assert resize_plan((96, 96), (24, 24), "area") is None


@pytest.mark.parametrize("interpolation", [i for i in INTERPOLATIONS if i != "area"])
def test_fixed_resize_through_products_is_the_library_resize(interpolation):
    x = inputs((2, 27, 20, 3))
    layer = FixedResize((9, 8), interpolation=interpolation)
    out = ops.convert_to_numpy(layer(x))
    assert layer._plan is not None
    np.testing.assert_allclose(out, ops.convert_to_numpy(resize_images(x, (9, 8), interpolation)),
                               rtol=1e-5, atol=1e-6)
    other = inputs((2, 30, 20, 3))  # another input size than the one built for: the library resize
    np.testing.assert_allclose(ops.convert_to_numpy(layer(other)),
                               ops.convert_to_numpy(resize_images(other, (9, 8), interpolation)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("synchronized", [True, False])
def test_batch_moments_and_their_gradients_are_ops_moments(synchronized):
    """TensorFlow's batch statistics with the backward pass written out (one replica) against Keras's
    own, values and gradients; one channel is constant (variance 0, clamped)."""
    if synchronized and keras.backend.backend() == "jax":
        pytest.skip("Keras's JAX moments take no synchronized flag; the resizer passes none there")
    h = inputs((3, 17, 11, 5)) * np.array([2.0, 0.5, 1.0, 3.0, 0.0], "float32") + 0.7
    u, v = np.array([0.3, -1.0, 2.0, 0.5, 1.0], "float32"), np.array([1.5, 0.2, -0.7, 1.0, 2.0], "float32")

    def both(fn):
        if keras.backend.backend() == "jax":
            import jax

            def loss(h):
                mean, var = fn(h)
                return ops.sum(mean * u + var * v), (mean, var)

            (_, stats), grad = jax.value_and_grad(loss, has_aux=True)(ops.convert_to_tensor(h))
            return [np.asarray(s) for s in stats], np.asarray(grad)
        import tensorflow as tf

        t = tf.constant(h)
        with tf.GradientTape() as tape:
            tape.watch(t)
            mean, var = fn(t)
            loss = tf.reduce_sum(mean * u + var * v)
        return [mean.numpy(), var.numpy()], tape.gradient(loss, t).numpy()

    (mean, var), grad = both(lambda t: batch_moments(t, synchronized=synchronized))
    (mean_ref, var_ref), grad_ref = both(lambda t: ops.moments(t, axes=(0, 1, 2), synchronized=synchronized))
    # Both are float32 sums of 561 values, in different orders (Keras's own is off by 2.7e-6 on the constant
    # 0.7 channel here, seen 2026-12-06): float32 rounding, not a formula error, which would be far larger.
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5, atol=1e-6)
    assert var[-1] >= 0
    np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-5 * float(np.abs(grad_ref).max()))


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_interpolation_matches_in_training(interpolation):
    shape = (2, 27, 20, 3)
    layer = make_layer((9, 8), shape, interpolation=interpolation, num_res_blocks=0)
    if interpolation != "area":
        assert_same(layer, inputs(shape), True)
        return
    # "area" trains on neither backend, before or after the change (TensorFlow's ResizeArea has no gradient,
    # Keras's JAX resize has no "area"): compare what does run, the forward pass on TensorFlow.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras's JAX backend has no 'area' resize")
    x = ops.convert_to_tensor(inputs(shape))
    for training in (True, False):
        np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=training)),
                                   ops.convert_to_numpy(plain_call(layer, x, training=training)), rtol=1e-5, atol=2e-5)


def test_frozen_layer_in_training_mode_uses_the_moving_statistics():
    """BatchNormalization normalises with its moving statistics when it is not trainable, even under
    training=True; so must the reformulation."""
    shape = (2, 24, 24, 3)
    layer = make_layer(8, shape, clip_output=True)
    layer.trainable = False
    cot = inputs((2, 8, 8, 3), seed=7)
    before = [ops.convert_to_numpy(v) for v in layer.non_trainable_variables]
    (_, ref), _, s_ref = loss_and_grads(layer, plain_call, inputs(shape), cot, True)
    (_, new), _, s_new = loss_and_grads(layer, lambda lyr, x, training: lyr(x, training=training),
                                        inputs(shape), cot, True)
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=2e-5)
    for a, b, c in zip(s_new, s_ref, before, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


def test_a_saved_model_loads_and_predicts_what_the_plain_formulation_predicts(tmp_path):
    """Variables keep their names and shapes: a model saved before the change loads and predicts the same."""
    shape = (2, 40, 36, 3)
    layer = make_layer((10, 12), shape, num_res_blocks=2)
    inp = keras.Input(shape[1:])
    model = keras.Model(inp, layer(inp))
    x = inputs(shape)
    expected = ops.convert_to_numpy(plain_call(layer, ops.convert_to_tensor(x), training=False))
    path = tmp_path / "resizer.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    # The resizes (40x36 -> 10x12) run as products with matrices fixed at build time, on both backends.
    loaded = again.get_layer(layer.name)
    assert loaded._plan is not None
    paths = sorted(v.path for v in again.get_layer(layer.name).weights)
    assert paths == sorted(v.path for v in layer.weights)
    assert any(p.endswith("bn_in/moving_variance") for p in paths) and any(p.endswith("conv_in/kernel") for p in paths)
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, rtol=1e-5, atol=2e-5)


def test_mixed_precision_stays_within_bfloat16_rounding_of_the_plain_formulation():
    shape = (2, 32, 32, 3)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = make_layer(8, shape)
        x = ops.convert_to_tensor(inputs(shape))
        for training in (False, True):
            new = ops.convert_to_numpy(ops.cast(layer(x, training=training), "float32"))
            ref = ops.convert_to_numpy(ops.cast(plain_call(layer, x, training=training), "float32"))
            assert new.dtype == np.float32 and np.isfinite(new).all()
            # bfloat16 keeps 8 bits of mantissa: a few units of 2^-8 on values of order 1-10.
            np.testing.assert_allclose(new, ref, rtol=0, atol=0.1 * max(1.0, float(np.abs(ref).max())))
    finally:
        keras.mixed_precision.set_global_policy("float32")
