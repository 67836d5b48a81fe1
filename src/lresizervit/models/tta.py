"""Test-time augmentation and the one prediction loop shared by the OOF and the submission, so the CV
scores exactly what gets submitted: the same views, averaged the same way, clipped the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lresizervit.task import Task

# none: the image as loaded; hflip: + its mirror; flip_zoom: + a centre zoom (90 % crop scaled back) of both.
TTA_MODES = ("none", "hflip", "flip_zoom")
ZOOM_FRACTION = 0.9


def _hflip(x: dict) -> dict:
    import tensorflow as tf

    # axis 2 is the width of [B, H, W, C]: a horizontal flip, which keeps a pet a pet.
    return {**x, "image": tf.reverse(x["image"], axis=[2])}


def _zoom(x: dict) -> dict:
    """The central ZOOM_FRACTION of the image scaled back to its size, still uint8 (what the models take)."""
    import tensorflow as tf

    image = x["image"]
    size = tf.shape(image)[1:3]
    zoomed = tf.image.resize(tf.image.central_crop(image, ZOOM_FRACTION), size, method="bilinear",
                             antialias=True)
    return {**x, "image": tf.cast(tf.clip_by_value(tf.round(zoomed), 0, 255), image.dtype)}


def tta_views(tta: str) -> list[Callable[[dict], dict]]:
    """Functions from an input dict to its TTA view; images are uint8 [B, H, W, C]."""
    if tta not in TTA_MODES:
        raise ValueError(f"predict.tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    views = [lambda x: x]
    if tta in ("hflip", "flip_zoom"):
        views.append(_hflip)
    if tta == "flip_zoom":
        views += [_zoom, lambda x: _zoom(_hflip(x))]
    return views


def predict_models(models: list, ds, tta: str, task: Task,
                   heads: Sequence[Callable[[np.ndarray], np.ndarray]] | None = None):
    """Average every model over every TTA view of `ds`, clipped to the task's target range.

    One pass over the data: each batch is decoded once and run through all models and views, so nothing
    has to be cached (a cached hidden test set at 512 px would take gigabytes).

    With `heads` (one per model), each model must return `(prediction, embeddings)` and `heads[i]` maps
    model i's embeddings to a second prediction (the SVR head); the result is then `(network, head)`, both
    averaged over models × views and clipped the same way.
    """
    from lresizervit.backend import predict_batch

    views = tta_views(tta)
    if heads is not None and len(heads) != len(models):
        raise ValueError(f"{len(heads)} heads for {len(models)} models")
    nn_chunks, head_chunks = [], []
    rows = None  # the first batch's size: later ones are padded to it on JAX (one compile per model)
    for element in ds:
        x = element[0] if isinstance(element, tuple) else element
        rows = rows or int(x["image"].shape[0])
        nn_total, head_total = 0.0, 0.0
        for i, model in enumerate(models):
            for view in views:
                out = predict_batch(model, view(x), rows)
                if heads is not None:
                    out, emb = out
                    head_total = head_total + np.asarray(heads[i](np.asarray(emb)), np.float64).reshape(-1)
                nn_total = nn_total + np.asarray(out, dtype=np.float64).reshape(-1)
        n = len(models) * len(views)
        nn_chunks.append(nn_total / n)
        head_chunks.append(head_total / n)

    def finish(chunks):
        return task.clip(np.concatenate(chunks) if chunks else np.zeros(0))

    return finish(nn_chunks) if heads is None else (finish(nn_chunks), finish(head_chunks))
