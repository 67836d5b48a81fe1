"""Time the learnable resizer alone, one training step at a time: the steadiest figure for its cost.

The whole train step (`python -m lresizervit bench CONFIG --what step`) moves by 10-30 % between runs on a
shared CPU; the resizer alone in a `keras.Model` (forward + backward + an SGD update, MSE against zeros)
moves much less, so old and new code compare best this way. `--src` imports the package from another
checkout (e.g. a `git worktree` of an older commit), so both run the same script:

    python tools/resizer_alone.py                               # this checkout, 96 -> 24, batch 32
    python tools/resizer_alone.py --src /tmp/old/src --size 512 --target 224 --batch 4

Prints one JSON line: the median step time of the learned resizer and of a plain (antialiased bilinear)
resize, and a 2048^3 float32 matmul's GFLOP/s before and after (the machine's speed at the time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="the src/ folder to import lresizervit from (default: this checkout's)")
    parser.add_argument("--size", type=int, default=96, help="input side (px)")
    parser.add_argument("--target", type=int, default=24, help="output side (px)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps (median reported)")
    args = parser.parse_args()
    sys.path.insert(0, args.src or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from lresizervit.models.resizer import FixedResize, LearnableResizer

    def matmul_gflops(n: int = 2048) -> float:  # inline: an older checkout's bench module may differ
        a = tf.random.normal((n, n), seed=1)
        float(tf.reduce_sum(tf.matmul(a, a)))
        start = time.perf_counter()
        for _ in range(3):
            float(tf.reduce_sum(tf.matmul(a, a)))
        return 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9

    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")
    y = np.zeros((args.batch, args.target, args.target, 3), "float32")

    def median_step(layer) -> float:
        inp = keras.Input((args.size, args.size, 3), batch_size=args.batch)
        out = layer(inp)
        if not layer.trainable_weights:  # a plain resize: one 1x1 convolution so there is something to train
            out = keras.layers.Conv2D(3, 1)(out)
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
        for _ in range(3):  # trace and warm up
            model.train_on_batch(x, y)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    result = {"size": args.size, "target": args.target, "batch": args.batch, "src": args.src or "this checkout",
              "matmul_gflops_before": matmul_gflops()}
    result["learned_ms"] = 1e3 * median_step(LearnableResizer(args.target, filters=args.filters))
    result["bilinear_ms"] = 1e3 * median_step(FixedResize(args.target))
    result["matmul_gflops_after"] = matmul_gflops()
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
