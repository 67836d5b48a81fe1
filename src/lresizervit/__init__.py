"""LResizerViT: a learnable image resizer in front of a Vision Transformer, trained jointly."""

import os as _os

# albumentations checks PyPI for a newer version on import; nothing here may touch the network.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# TF's C++ INFO/WARNING banner drowns the CLI's own output; users can lower it again.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
