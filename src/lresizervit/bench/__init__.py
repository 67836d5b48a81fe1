"""`python -m lresizervit bench`: what the pipeline and the model cost, each figure a median of repeats
after a warm-up, every comparison measured side by side. One benchmark per module:

- loader: the loader's images/s against a plain decode_jpeg + resize over the same files;
- step: seconds per train step, peak memory and achieved FLOP/s per resizer mode, input size and
  precision (`efficiency` is the same measurement of the learned resizer in float32 and mixed_bfloat16);
- predict: images/s of fold models x TTA views on a trained experiment;
- replicas: the train step with 1 and 2 replicas on the same global batch.

Shared by them: flops (FLOP counting), machine (what ran it, its matmul FLOP/s, memory), runner (one
measurement in a fresh process); command turns the CLI's flags into one benchmark's call and table.
"""
