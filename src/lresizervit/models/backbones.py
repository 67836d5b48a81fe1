"""Backbone registry: native ViTs from `models/vit.py`, or pretrained SavedModels (local or TF-Hub / Kaggle).

A backbone is named by a string:
- a registry name (`vit_tiny_demo`, `vit_b16`, ...): a native Keras ViT built from scratch by `build_vit`;
- `savedmodel:/local/dir`: a TF2 SavedModel folder (holding `saved_model.pb`), e.g. a TF-Hub ViT feature
  extractor attached to a Kaggle notebook as a dataset (`savedmodel:/kaggle/input/vit-b16-fe`);
- `hub:<handle>`: a TF-Hub / Kaggle Models URL, resolved to a local folder by `tensorflow_hub.resolve`
  (needs the internet or a `TFHUB_CACHE_DIR` that already holds the model).
- `keras_hub:<preset>`: a keras-hub preset (a local preset folder, or a preset name fetched by kagglehub),
  built by `models/keras_hub_backbone.py`; it reloads from a `.keras` file in safe mode, with no folder.

A SavedModel backbone takes float32 `[B, H, W, 3]` pixels in [-1, 1] at the fixed size of its signature and
returns `[B, D]` features. It is fine-tunable: its variables are the SavedModel's own, wrapped (not copied).

Saving: a model holding a SavedModel backbone saves to `.keras` with all its (fine-tuned) weights, but the
graph stays in the SavedModel: the archive stores the folder's absolute path, so reloading needs that folder
at the same path, and `keras.saving.load_model(..., safe_mode=False)` (Keras refuses by default to load a
layer that executes an external SavedModel's graph).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse

import keras
import tensorflow as tf
from keras import layers

# Imported here (it imports keras_hub only when a keras_hub: backbone is built) so that its layers are
# registered wherever a saved model is reloaded.
from lresizervit.models.keras_hub_backbone import build_keras_hub_backbone, is_keras_hub_spec
from lresizervit.models.preset_files import (
    HUB_PREFIX,
    SAVEDMODEL_PREFIX,
    BackboneUnavailableError,
    is_savedmodel_spec,
)
from lresizervit.models.vit import VIT_VARIANTS, build_vit, get_vit_spec
from lresizervit.net import unreachable

# The config key that sets the size the backbone sees; named in errors so the user knows what to change.
TARGET_SIZE_KEY = "model.resizer.target_size"


@keras.saving.register_keras_serializable(package="lresizervit")
class TrainableTFSMLayer(layers.TFSMLayer):
    """A `TFSMLayer` that stateful optimizers (Adam, AdamW, SGD with momentum) can fine-tune.

    Keras >= 3.10 names an optimizer slot after its variable (`<name>_momentum`) inside a name scope, and a
    SavedModel's variable names keep TF1's `:0` suffix, which a scope name may not contain: the first
    training step fails with `'patch_embed_kernel:0_momentum' is not a valid scope name`. Replacing `:` as
    well as `/` in the wrapper's name fixes it.

    Also: the layer computes in float32 whatever the global dtype policy (a SavedModel signature's dtype is
    fixed; under `mixed_bfloat16` a plain TFSMLayer would feed it bfloat16 and fail), and a signature's dict
    output is reduced to one tensor (`output_key`, or the only output).
    """

    def __init__(
        self,
        filepath: str,
        call_endpoint: str = "serving_default",
        call_training_endpoint: str | None = None,
        trainable: bool = True,
        name: str | None = None,
        dtype=None,
        output_key: str | None = None,
    ):
        if not os.path.isfile(os.path.join(str(filepath), "saved_model.pb")):
            # Mostly hit when reloading a saved model whose SavedModel folder moved: say why it is needed.
            raise FileNotFoundError(
                f"SavedModel folder {filepath!r} not found (no saved_model.pb there). A model with a "
                "SavedModel backbone reads the backbone's graph from that folder (its fine-tuned weights are "
                "in the .keras file): make the folder available at that same path."
            )
        super().__init__(
            filepath,
            call_endpoint=call_endpoint,
            call_training_endpoint=call_training_endpoint,
            trainable=trainable,
            name=name,
            dtype="float32" if dtype is None else dtype,
        )
        self.output_key = output_key

    def _add_existing_weight(self, weight):
        # Same as the parent's (which wraps: a Keras TF Variable built from a tf.Variable keeps that very
        # variable as its value, so training updates the SavedModel's own variables) but ':'-free.
        variable = keras.Variable(
            initializer=weight,
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=weight.name.replace("/", "_").replace(":", "_"),
        )
        self._track_variable(variable)

    def call(self, inputs, training=False, **kwargs):
        # The signature's input dtype is fixed (float32 for TF-Hub ViTs): cast whatever the policy produced.
        inputs = tf.nest.map_structure(lambda x: tf.cast(x, self.compute_dtype), inputs)
        outputs = super().call(inputs, training=training, **kwargs)
        if not isinstance(outputs, dict):
            return outputs
        if self.output_key is not None:
            if self.output_key not in outputs:
                raise ValueError(
                    f"SavedModel {self.filepath!r} endpoint {self.call_endpoint!r} has no output "
                    f"{self.output_key!r}; its outputs: {sorted(outputs)}"
                )
            return outputs[self.output_key]
        if len(outputs) != 1:
            raise ValueError(
                f"SavedModel {self.filepath!r} endpoint {self.call_endpoint!r} returns several outputs "
                f"{sorted(outputs)}: pick one with output_key"
            )
        return next(iter(outputs.values()))

    def get_config(self):
        return {**super().get_config(), "output_key": self.output_key}


def _offline_advice(spec: str) -> str:
    cache = os.environ.get("TFHUB_CACHE_DIR") or "(unset)"
    return (
        f"backbone {spec!r} needs the internet, or a TFHUB_CACHE_DIR (now {cache}) that already holds this "
        "model. Offline (e.g. a Kaggle inference notebook), attach the model as a Kaggle dataset (or Kaggle "
        "Model) and use backbone 'savedmodel:/kaggle/input/<name>', the folder that holds saved_model.pb"
    )


def _hub_cache_dir_for(handle: str) -> str:
    # tensorflow_hub 0.16's compressed-download cache key (compressed_module_resolver._module_dir): a hit
    # there makes hub.resolve return without touching the network, so only a miss needs the network probe.
    cache_dir = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
    return os.path.join(cache_dir, hashlib.sha1(handle.encode("utf8")).hexdigest())


def _resolve_hub(spec: str, handle: str) -> str:
    try:
        import tensorflow_hub as hub
    except ImportError:
        raise BackboneUnavailableError(f"backbone {spec!r} needs tensorflow-hub, an optional dependency (its tf-keras "
                                       "could replace an image's TensorFlow): pip install 'lresizervit[tfhub]', "
                                       "or download the model and use 'savedmodel:/its/folder'") from None

    remote = urllib.parse.urlparse(handle).scheme in ("http", "https", "gs")
    if remote:
        cached = _hub_cache_dir_for(handle)
        if not (os.path.isdir(cached) and os.listdir(cached)):
            # hub.resolve has no timeout of its own; fail fast and say what to do instead.
            # A gs:// handle is read from Cloud Storage over HTTPS.
            why = unreachable("https://storage.googleapis.com" if handle.startswith("gs://") else handle)
            if why is not None:
                raise BackboneUnavailableError(f"{_offline_advice(spec)} ({why})")
    try:
        return hub.resolve(handle)
    except Exception as exc:  # urllib, tf.errors and OSError subclasses: all mean "not fetched"
        raise BackboneUnavailableError(f"{_offline_advice(spec)} (tensorflow_hub.resolve: {exc})") from exc


def resolve_backbone_path(spec: str) -> str:
    """`savedmodel:/dir` or `hub:<handle>` → an absolute local SavedModel folder holding saved_model.pb."""
    if spec.startswith(SAVEDMODEL_PREFIX):
        path = spec[len(SAVEDMODEL_PREFIX):]
    elif spec.startswith(HUB_PREFIX):
        path = _resolve_hub(spec, spec[len(HUB_PREFIX):])
    else:
        raise ValueError(f"backbone {spec!r} is neither 'savedmodel:/local/dir' nor 'hub:<handle>'")
    if not path:
        raise ValueError(f"backbone {spec!r}: empty path after the prefix")
    # Absolute, because a model saved with this backbone stores the path and may be reloaded from elsewhere.
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"backbone {spec!r}: folder {path!r} does not exist; expected a TF2 SavedModel folder "
            "holding saved_model.pb (and variables/)"
        )
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"backbone {spec!r}: folder {path!r} holds no saved_model.pb; expected a TF2 SavedModel folder "
            "(for a Kaggle dataset, point at the subfolder that holds saved_model.pb)"
        )
    return path


def _endpoint_input_shape(fn) -> tuple:
    """The shape of the endpoint's single image input: signatures and restored tf.functions differ."""
    if hasattr(fn, "structured_input_signature"):
        signatures = [fn.structured_input_signature]
    else:
        signatures = [c.structured_input_signature for c in fn.concrete_functions]
    specs = [s for sig in signatures for s in tf.nest.flatten(sig) if isinstance(s, tf.TensorSpec)]
    shapes = {tuple(s.shape.as_list()) if s.shape.rank is not None else None for s in specs}
    if len(specs) == 0 or len(shapes) != 1:
        raise ValueError(f"expected one image input [B, H, W, 3]; the endpoint takes {specs}")
    shape = shapes.pop()
    if shape is None or len(shape) != 4 or shape[-1] not in (3, None):
        raise ValueError(f"expected one image input [B, H, W, 3]; the endpoint takes {specs}")
    return shape


def build_savedmodel_backbone(
    spec: str,
    image_size: int,
    endpoint: str = "serving_default",
    output_key: str | None = None,
    name: str = "savedmodel_backbone",
    size_key: str = TARGET_SIZE_KEY,
) -> keras.Model:
    """A pretrained, fine-tunable backbone: float32 `[B, S, S, 3]` in [-1, 1] → `[B, D]` features.

    `image_size` is what the resizer produces; it must equal the SavedModel's fixed input size (ViT position
    embeddings are fixed at export). A signature with unknown H and W accepts any size. `size_key` is the
    config key a size mismatch error tells the user to change (`data.image_size` when there is no resizer).
    """
    path = resolve_backbone_path(spec)
    layer = TrainableTFSMLayer(path, call_endpoint=endpoint, output_key=output_key, name="savedmodel")
    _, height, width, _ = _endpoint_input_shape(layer.call_endpoint_fn)
    for side in (height, width):
        if side is not None and side != image_size:
            raise ValueError(
                f"backbone {spec!r} takes {height}x{width} images but is given "
                f"{image_size}x{image_size}: set {size_key} to {side}"
            )
    # float32 Input: under a mixed policy the upstream resizer emits bfloat16; the layer casts it back.
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    features = layer(inputs)
    if len(features.shape) != 2:
        raise ValueError(
            f"backbone {spec!r} endpoint {endpoint!r} returns shape {tuple(features.shape)}, not [B, D] "
            "features: use a feature-extractor SavedModel (e.g. TF-Hub's *_fe ViTs) or another output_key"
        )
    return keras.Model(inputs, features, name=name)


def backbone_patch_size(name_or_spec: str) -> int | None:
    """The native ViT's patch size, or None for a SavedModel or keras-hub preset (checked when built)."""
    if is_savedmodel_spec(name_or_spec) or is_keras_hub_spec(name_or_spec):
        return None
    return get_vit_spec(name_or_spec).patch_size


def build_backbone(
    name_or_spec: str, image_size: int, pooling: str = "cls", dropout: float = 0.0, size_key: str = TARGET_SIZE_KEY,
    architecture: dict | None = None,
) -> keras.Model:
    """A registry name → native ViT (`build_vit`); `savedmodel:` / `hub:` → pretrained SavedModel backbone;
    `keras_hub:` → pretrained keras-hub preset, or, with `architecture` (a saved fold's), the same layers
    built without the preset folder, for the fold's weights to be loaded into."""
    if architecture is not None and not is_keras_hub_spec(name_or_spec):
        raise ValueError(f"backbone {name_or_spec!r}: a saved keras-hub architecture was given for a backbone "
                         "that is not keras_hub:")
    if is_keras_hub_spec(name_or_spec):
        # Each family pools by its one declared rule (see keras_hub_backbone.py); dropout is the preset's.
        if pooling != "cls" or dropout != 0.0:
            raise ValueError(
                f"backbone {name_or_spec!r}: a keras-hub backbone pools by its family's rule and keeps the "
                f"preset's dropout; leave model.backbone.pooling='cls' and model.backbone.dropout=0.0 "
                f"(got {pooling!r}, {dropout})"
            )
        return build_keras_hub_backbone(name_or_spec, image_size, size_key=size_key, architecture=architecture)
    if not is_savedmodel_spec(name_or_spec):
        if name_or_spec not in VIT_VARIANTS:
            raise ValueError(
                f"unknown backbone {name_or_spec!r}; known: {', '.join(VIT_VARIANTS)}, "
                "or 'savedmodel:/local/dir', 'hub:<handle>', 'keras_hub:<preset folder or name>'"
            )
        return build_vit(name_or_spec, image_size, pooling=pooling, dropout=dropout)
    # A SavedModel's pooling and dropout were fixed at export: refuse settings that would be ignored silently.
    if pooling != "cls" or dropout != 0.0:
        raise ValueError(
            f"backbone {name_or_spec!r}: pooling and dropout are fixed inside a SavedModel; leave "
            f"model.backbone.pooling='cls' and model.backbone.dropout=0.0 (got {pooling!r}, {dropout})"
        )
    return build_savedmodel_backbone(name_or_spec, image_size, size_key=size_key)
