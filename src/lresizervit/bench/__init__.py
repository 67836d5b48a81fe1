"""`python -m lresizervit bench`: what the pipeline and the model cost, each figure a median of repeats
after a warm-up, every comparison measured side by side. One benchmark per module:

- loader: the loader's images/s against a plain decode_jpeg + resize over the same files;
- step: seconds per train step, peak memory and achieved FLOP/s per resizer mode, input size and
  precision (`efficiency` is the same measurement of the learned resizer in float32 and mixed_bfloat16);
- predict: images/s of fold models x TTA views on a trained experiment;
- predict_memory (`predict --test-images`): peak memory and s per 1,000 photos of the whole predict
  command for N test photos, each N in its own process;
- replicas: the train step with 1 and 2 replicas on the same global batch.

Shared by them: flops (FLOP counting), machine (what ran it, its matmul FLOP/s, memory), runner (one
measurement in a fresh process); command turns the CLI's flags into one benchmark's call and table.
"""
