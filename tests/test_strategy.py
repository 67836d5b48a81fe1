"""tf.distribute: the strategy choice, and a 2-replica run on this CPU split into 2 logical devices that
matches the 1-replica run on the same global batch."""

import json
import os
import subprocess
import sys

import pytest

from lresizervit.training.strategy import make_strategy, multi_worker_task
from tests.tiny import SETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_strategy_choice_on_this_machine(monkeypatch):
    import tensorflow as tf

    for var in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TF_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    # No TPU, no GPU here: auto falls back to the default (one-device) strategy.
    assert make_strategy("auto").num_replicas_in_sync == 1
    assert make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="train.strategy must be one of"):
        make_strategy("horovod")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        make_strategy("multi_worker")


def test_multi_worker_task_names_the_chief(monkeypatch):
    def task(cluster, kind, index):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
        return multi_worker_task("multi_worker")

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    # Without a chief task, worker 0 is the chief (it writes the experiment; the others write beside it).
    assert task(workers, "worker", 0) == (0, True) and task(workers, "worker", 1) == (1, False)
    with_chief = {"chief": ["127.0.0.1:0"], **workers}
    assert task(with_chief, "chief", 0) == (0, True)
    assert task(with_chief, "worker", 0) == (1, False) and task(with_chief, "worker", 1) == (2, False)
    assert multi_worker_task("auto") is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": workers}))
    with pytest.raises(ValueError, match="TF_CONFIG needs a cluster and a task"):
        multi_worker_task("multi_worker")
    monkeypatch.delenv("TF_CONFIG")
    assert multi_worker_task("multi_worker") is None  # make_strategy says what is missing


# Both scripts run in one process (a TensorFlow import each would cost ~7 s of CPU), this CPU split into 2
# logical devices first: SYNC_MOMENTS then TWO_REPLICAS, each printing one JSON line under its own key.
LOGICAL_CPUS = r"""
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

SYNC_MOMENTS = r"""
import json
import numpy as np
from keras import ops
from lresizervit.models.resizer import batch_moments

rng = np.random.default_rng(0)
# The two replicas see different batches (2 images each): their statistics and gradients differ.
halves = [rng.normal(0.5, 2.0, (3, 9, 7, 4)).astype("float32"), rng.normal(-1.0, 0.5, (2, 9, 7, 4)).astype("float32")]
u, v = rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

def run(moments):
    def step():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        h = tf.cond(tf.equal(i, 0), lambda: tf.constant(halves[0][1:]), lambda: tf.constant(halves[1]))
        with tf.GradientTape() as tape:
            tape.watch(h)
            mean, var = moments(h)
            loss = tf.reduce_sum(mean * tf.gather(u, i) + var * tf.gather(v, i))
        return mean, var, tape.gradient(loss, h)
    out = strategy.run(tf.function(step))
    return [[t.numpy().tolist() for t in strategy.experimental_local_results(o)] for o in out]

new = run(lambda h: batch_moments(h, synchronized=True))
ref = run(lambda h: ops.moments(h, axes=(0, 1, 2), synchronized=True))
print(json.dumps({"moments": {"new": new, "ref": ref}}))
"""

TWO_REPLICAS = r"""
import json, sys
import numpy as np
import tensorflow as tf
import keras
from lresizervit.config import load_config
from lresizervit.training.strategy import make_strategy
from lresizervit.training.trainer import compile_model

overrides = json.loads(sys.argv[1])  # the tiny model's, then the recipe's
rng = np.random.default_rng(0)
x = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
     "metadata": rng.integers(0, 2, (8, 12)).astype("float32")}
y = rng.uniform(1, 100, 8).astype("float32")
ds = tf.data.Dataset.from_tensors((x, y)).repeat(4)  # 4 steps on the same global batch of 8

def losses(strategy_name, per_replica_lr):
    keras.utils.set_random_seed(0)
    cfg = load_config("configs/demo.yaml", overrides + [f"train.learning_rate={per_replica_lr}"])
    strategy = make_strategy(strategy_name)
    with strategy.scope():
        model = compile_model(cfg, steps_per_epoch=4, replicas=strategy.num_replicas_in_sync)
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False).history
    return strategy.num_replicas_in_sync, history["loss"]

one = losses("default", 0.002)
# batch_size is per replica and the learning rate scales with replicas: halve it to compare equal steps.
two = losses("mirrored", 0.001)
print(json.dumps({"replicas": {"one": one, "two": two}}))
"""


@pytest.fixture(scope="module")
def two_logical_cpus() -> dict:
    """SYNC_MOMENTS's and TWO_REPLICAS's results, from one fresh process with 2 logical CPUs."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    overrides = [*SETS, "model.head_dropout=0.0", "train.warmup_fraction=0.0", "train.learning_rate=0.002",
                 "train.epochs=1"]
    proc = subprocess.run([sys.executable, "-c", LOGICAL_CPUS + SYNC_MOMENTS + TWO_REPLICAS, json.dumps(overrides)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{"moments": ') or line.startswith('{"replicas": '):
            results.update(json.loads(line))
    assert set(results) == {"moments", "replicas"}, proc.stdout[-3000:]
    return results


@pytest.mark.slow
def test_two_replicas_match_one_on_the_same_global_batch(two_logical_cpus):
    result = two_logical_cpus["replicas"]
    (n1, loss1), (n2, loss2) = result["one"], result["two"]
    assert (n1, n2) == (1, 2)
    assert loss1[-1] < loss1[0]  # it trained
    # Same global batch, same effective learning rate, synchronised BatchNorm: the runs differ only by the
    # order of floating-point sums (all-reduce vs one device). Tolerance: 1e-3 relative.
    for a, b in zip(loss1, loss2, strict=True):
        assert b == pytest.approx(a, rel=1e-3)


@pytest.mark.slow
def test_synchronized_batch_moments_all_reduce_values_and_gradients_as_keras_does(two_logical_cpus):
    """The resizer's batch statistics with their backward pass written out (models/resizer.py
    batch_moments) against Keras's synchronized moments, under 2 replicas that see different images and
    different losses: every replica gets the global statistics and the gradient through them."""
    import numpy as np

    result = two_logical_cpus["moments"]

    (mean, var, grad), (mean_ref, var_ref, grad_ref) = result["new"], result["ref"]
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean[0], mean[1], rtol=1e-6)  # global statistics on both replicas
    for g, g_ref in zip(grad, grad_ref, strict=True):
        g, g_ref = np.asarray(g), np.asarray(g_ref)
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-5 * np.abs(g_ref).max())
