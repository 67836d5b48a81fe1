"""Where the learnable resizer's training step spends its time, op by op, from TensorFlow's own profiler.

Runs the resizer alone in a `keras.Model` (forward + backward + SGD, as tools/resizer_alone.py), traces
`--steps` steps with `tf.profiler.experimental`, reads the trace's `xplane.pb` (no TensorBoard needed) and
prints the ops that took longest, summed over every thread, per step:

    python tools/profile_resizer.py                              # 96 -> 24, batch 32
    python tools/profile_resizer.py --size 512 --target 224 --batch 4 --top 40
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="the src/ folder to import lresizervit from (default: this checkout's)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--target", type=int, default=24)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, args.src or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from lresizervit.models.resizer import LearnableResizer

    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")
    y = np.zeros((args.batch, args.target, args.target, 3), "float32")
    inp = keras.Input((args.size, args.size, 3), batch_size=args.batch)
    model = keras.Model(inp, LearnableResizer(args.target)(inp))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    for _ in range(3):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb").read())
    per_op = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the op threads (not Python, not the executor's own)
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if not name.startswith("Executor"):
                    per_op[name.replace("gradient_tape/", "grad/")] += event.duration_ps / 1e9 / args.steps
    print(f"ops of one training step, {args.size} -> {args.target}, batch {args.batch}: "
          f"{sum(per_op.values()):.1f} CPU-ms in all")
    for name, ms in per_op.most_common(args.top):
        print(f"{ms:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
