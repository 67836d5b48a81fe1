"""FLOPs of a model, counted on its traced graph: the contractions only, with TF's profiler as a cross-check."""

from __future__ import annotations

# Ops whose FLOPs are counted: the contractions (matmuls, convolutions, einsums). Element-wise ops, norms,
# softmax and resizes are left out: they are memory-bound, a few % of the total, and no peak figure applies.
CONTRACTION_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D",
                   "DepthwiseConv2dNative")
FLOPS_COUNTING = ("contraction FLOPs (MatMul, BatchMatMul, Einsum, Conv2D; multiply and add counted "
                  "separately) of the traced forward graph, x3 for forward + backward")


def _einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> int:
    """2 x the product of every index's size: each output element sums over the contracted indices."""
    inputs, _ = equation.replace(" ", "").split("->")
    sizes: dict[str, int] = {}
    for spec, shape in zip(inputs.split(","), shapes, strict=True):
        if "..." in spec:
            n_ell = len(shape) - (len(spec) - 3)
            ell = [f"@{i}" for i in range(n_ell)]  # ellipsis axes, aligned from the right as in broadcasting
            labels = [*spec[:spec.index("...")], *ell, *spec[spec.index("...") + 3:]]
        else:
            labels = list(spec)
        for label, dim in zip(labels, shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), int(dim))
    total = 2
    for dim in sizes.values():
        total *= dim
    return total


def op_flops(op) -> int:
    """FLOPs (multiply and add counted separately) of one contraction op with static shapes, else 0."""
    shape = [list(t.shape) for t in op.inputs]
    out = list(op.outputs[0].shape) if op.outputs else []
    if any(d is None for s in [*shape, out] for d in s):
        raise ValueError(f"op {op.name} ({op.type}) has a dynamic shape; trace with a fixed batch size")
    n_out = 1
    for d in out:
        n_out *= d
    if op.type == "MatMul":
        k = shape[0][0] if op.get_attr("transpose_a") else shape[0][1]
        return 2 * n_out * k
    if op.type.startswith("BatchMatMul"):
        k = shape[0][-2] if op.get_attr("adj_x") else shape[0][-1]
        return 2 * n_out * k
    if op.type == "Conv2D":  # filter [kh, kw, in / groups, out]
        kh, kw, cin, _ = shape[1]
        return 2 * n_out * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":  # filter [kh, kw, in, multiplier]
        kh, kw = shape[1][:2]
        return 2 * n_out * kh * kw
    if op.type == "Einsum":
        return _einsum_flops(op.get_attr("equation").decode(), [tuple(s) for s in shape])
    return 0


def graph_flops(graph) -> dict:
    """Contraction FLOPs of a traced graph, in total and by op type (nested function bodies included)."""
    by_type: dict[str, int] = {}

    def visit(g):
        for op in g.get_operations():
            if op.type in CONTRACTION_OPS:
                by_type[op.type] = by_type.get(op.type, 0) + op_flops(op)
        for fn in getattr(g, "_functions", {}).values():
            inner = getattr(fn, "graph", None)
            if inner is not None:
                visit(inner)

    visit(graph)
    return {"total": sum(by_type.values()), "by_op": by_type}


def model_flops(model, inputs) -> dict:
    """FLOPs of one forward pass of `model` on `inputs` (one batch, fixed shapes), counted on its traced
    graph; a train step is taken as 3x that (the backward pass does two contractions per forward one)."""
    import tensorflow as tf

    spec = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)), inputs)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph
    counted = graph_flops(graph)
    return {"forward_flops": counted["total"], "train_step_flops": 3 * counted["total"],
            "forward_flops_by_op": counted["by_op"], "tf_profiler_forward_flops": _tf_profiler_flops(graph)}


def _tf_profiler_flops(graph) -> int | None:
    """TF's own float-op count of the graph, for reference: it includes element-wise ops but counts 0 for
    Einsum (Keras' attention scores and weighted sums), so it under-counts attention."""
    try:
        from tensorflow.python.profiler import model_analyzer, option_builder
        from tensorflow.python.util import deprecation

        opts = option_builder.ProfileOptionBuilder(
            option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        with deprecation.silence():  # it is a TF1 API and says so on every call
            return int(model_analyzer.profile(graph, options=opts).total_float_ops)
    except Exception:  # a private API: its absence must not fail the benchmark
        return None
