"""The SVR head on a fold model's embeddings: an RBF support-vector regression on standardised features.

It is fitted by scikit-learn (or cuML on a GPU, when importable) and stored as plain arrays in an `.npz`
file read with `allow_pickle=False`, never as a pickle: a head in someone else's Kaggle dataset cannot run
code when it is loaded. Prediction is the SVR's own formula on those arrays,
`dual_coef · exp(-gamma |z - sv|²) + intercept` for the standardised embedding z, so nothing of the fitting
library is needed to use a head (tested equal to scikit-learn's predict).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lresizervit.io_utils import atomic_write_with

# Test embeddings per kernel block: bounds the [rows, support vectors] distance matrix in memory.
_CHUNK = 1024


@dataclass
class SVRHead:
    mean: np.ndarray  # [D] of the training embeddings
    scale: np.ndarray  # [D] their standard deviation (1 where it is 0)
    support_vectors: np.ndarray  # [S, D], standardised
    dual_coef: np.ndarray  # [S]
    intercept: float
    gamma: float
    info: dict = field(default_factory=dict)  # fingerprint, svr_c, backend, n_train

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        z = (np.asarray(emb, np.float64) - self.mean) / self.scale
        sv = self.support_vectors
        sv_sq = np.einsum("ij,ij->i", sv, sv)
        out = np.empty(len(z))
        for lo in range(0, len(z), _CHUNK):
            block = z[lo:lo + _CHUNK]
            dist = np.einsum("ij,ij->i", block, block)[:, None] + sv_sq[None, :] - 2.0 * block @ sv.T
            out[lo:lo + _CHUNK] = np.exp(-self.gamma * np.maximum(dist, 0.0)) @ self.dual_coef + self.intercept
        return out


def _numpy(x) -> np.ndarray:
    """cuML returns device arrays; scikit-learn numpy ones."""
    return np.asarray(x.get() if hasattr(x, "get") else x, dtype=np.float64)


def fit_svr_head(emb: np.ndarray, target: np.ndarray, c: float, info: dict | None = None) -> SVRHead:
    """Standardise `emb` on its own rows, fit an RBF SVR (C = `c`, gamma "scale") and keep its arrays."""
    emb = np.asarray(emb, np.float64)
    mean = emb.mean(axis=0)
    scale = emb.std(axis=0)
    scale[scale == 0] = 1.0
    z = (emb - mean) / scale
    # scikit-learn's gamma="scale", computed here so that both backends use the same value.
    variance = z.var()
    gamma = 1.0 / (z.shape[1] * variance) if variance > 0 else 1.0
    try:
        from cuml.svm import SVR  # optional GPU backend, same interface

        backend = "cuml"
    except ImportError:
        from sklearn.svm import SVR

        backend = "sklearn"
    svr = SVR(C=c, kernel="rbf", gamma=gamma)
    svr.fit(z.astype(np.float32), np.asarray(target, np.float64))
    return SVRHead(mean, scale, _numpy(svr.support_vectors_), _numpy(svr.dual_coef_).reshape(-1),
                   float(_numpy(svr.intercept_).reshape(-1)[0]), gamma,
                   {**(info or {}), "svr_c": float(c), "backend": backend, "n_train": len(z)})


def save_svr_head(head: SVRHead, path: str | os.PathLike) -> Path:
    """Write the head atomically: a reader sees the old file or the whole new one."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mean=head.mean, scale=head.scale, support_vectors=head.support_vectors,
                     dual_coef=head.dual_coef, intercept=np.float64(head.intercept), gamma=np.float64(head.gamma),
                     info=np.array(json.dumps(head.info)))

    return atomic_write_with(path, write)


def load_svr_head(path: str | os.PathLike) -> SVRHead:
    """Read a head written by `save_svr_head`; anything else (a pickle, a truncated file) raises ValueError,
    OSError or KeyError without executing anything."""
    with np.load(path, allow_pickle=False) as data:
        return SVRHead(data["mean"], data["scale"], data["support_vectors"], data["dual_coef"],
                       float(data["intercept"]), float(data["gamma"]), json.loads(str(data["info"])))
