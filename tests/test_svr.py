"""The SVR head stored as plain arrays: the same predictions as scikit-learn's, and nothing in a file runs."""

import pickle

import numpy as np
import pytest

from lresizervit.inference.svr import fit_svr_head, load_svr_head, save_svr_head


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d) + rng.normal(size=d)
    x[:, 2] = 3.0  # a constant column: its scale becomes 1, not a division by 0
    return x, 40 + 10 * np.sin(x[:, 0]) + x[:, 1] + rng.normal(size=n)


def test_predictions_equal_scikit_learns_and_survive_a_save(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    x, y = _data()
    head = fit_svr_head(x, y, 8.0, {"fingerprint": "abc"})
    reference = make_pipeline(StandardScaler(), SVR(C=8.0, kernel="rbf", gamma="scale")).fit(x, y)
    new, _ = _data(2500, seed=1)  # more rows than one kernel block
    np.testing.assert_allclose(head(new), reference.predict(new), rtol=1e-4, atol=1e-4)
    assert head.info == {"fingerprint": "abc", "svr_c": 8.0, "backend": "sklearn", "n_train": 120}
    back = load_svr_head(save_svr_head(head, tmp_path / "svr_c8.npz"))
    np.testing.assert_array_equal(back(new), head(new))
    assert back.info == head.info


class _Boom:
    def __reduce__(self):
        return (open, ("/nonexistent-dir-so-this-fails/x", "w"))


def test_a_pickle_in_the_file_is_refused_never_unpickled(tmp_path):
    path = tmp_path / "svr_c8.npz"
    with open(path, "wb") as f:
        np.savez(f, mean=np.array([_Boom()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_svr_head(path)
    (tmp_path / "old.npz").write_bytes(pickle.dumps({"pipeline": 1}))
    with pytest.raises((ValueError, OSError)):
        load_svr_head(tmp_path / "old.npz")
