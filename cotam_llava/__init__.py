"""cotam-llava: CoTAM, an image and video codec tailored to multimodal LLMs.

Importing the package loads nothing heavy (no torch, no transformers). The public names below are
imported on first use (PEP 562), so ``from cotam_llava import CoTAMELIC, encode, decode`` costs only what
those need. The one global change: the CoTAM configs, models and processor are registered with transformers'
Auto classes (``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoProcessor``, hence ``pipeline``) — at once
if transformers' Auto classes are already imported, else as soon as they are (:mod:`cotam_llava._autoregister`;
``docs/mllm.md`` says why). Benchmarks live in :mod:`cotam_llava.evaluation`, the command line in
:mod:`cotam_llava.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name → the module that defines it.
_LAZY = {
    **dict.fromkeys(("CoTAMELIC", "CoTAMCodecConfig", "QualityMap", "ParseLimits", "DecodedImage", "encode", "decode",
                     "iter_decode", "compress_image"), "cotam_llava.codec"),
    **dict.fromkeys(("CoTAMVisionTower", "CoTAMTowerConfig"), "cotam_llava.vision.tower"),
    **dict.fromkeys(("LatentFeatureAdapter", "LatentAdapterConfig"), "cotam_llava.vision.adapter"),
    **dict.fromkeys(("CoTAMLlavaConfig", "CoTAMLlavaOnevisionConfig", "CoTAMInternVLConfig",
                     "CoTAMLlavaForConditionalGeneration", "CoTAMLlavaOnevisionForConditionalGeneration",
                     "CoTAMInternVLForConditionalGeneration", "CoTAMProcessor"), "cotam_llava.models"),
    **dict.fromkeys(("CoTAMError", "BitstreamError", "ConfigError", "CheckpointError"), "cotam_llava.errors"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cotam_llava' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


from ._autoregister import install as _install_auto_classes  # noqa: E402  (last: the package is complete)

_install_auto_classes()
