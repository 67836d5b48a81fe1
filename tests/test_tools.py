"""The developer tools behind docs/RESIZER_SPEED.md's figures run and report what they say."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def run_tool(*args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_resizer_alone_times_both_layers_from_the_given_checkout():
    out = run_tool("tools/resizer_alone.py", "--src", str(ROOT / "src"), "--size", "32", "--target", "8",
                   "--batch", "2", "--filters", "4", "--steps", "2")
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["size"], result["target"], result["batch"]) == (32, 8, 2)
    assert result["src"] == str(ROOT / "src")
    assert result["learned_ms"] > 0 and result["bilinear_ms"] > 0
    assert result["matmul_gflops_before"] > 0 and result["matmul_gflops_after"] > 0


def test_profile_resizer_lists_the_resizers_own_ops():
    out = run_tool("tools/profile_resizer.py", "--size", "32", "--target", "8", "--batch", "2", "--steps", "2",
                   "--top", "50")
    lines = out.strip().splitlines()
    assert lines[0].startswith("ops of one training step, 32 -> 8, batch 2:")
    ops = lines[1:]
    assert ops and all(line.split()[1] == "ms" for line in ops)
    # The full-resolution convolution and its kernel gradient are there, by their layer's name.
    assert any("conv_in" in line and "BackpropFilter" in line for line in ops)
    assert any("conv_in" in line and "Conv2D" in line and "grad/" not in line for line in ops)
