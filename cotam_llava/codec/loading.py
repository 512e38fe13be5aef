"""One loader for every learned base codec: a checkpoint's ``config.json`` names its ``model_type``.

::

    config.json {"model_type": "cotam-elic" | "cotam-dcae", ...} ─model_type_of─▶ codec_class ─▶ .from_pretrained

``CoTAMELIC.from_pretrained`` and ``CoTAMELIC.from_preset`` dispatch through here, so every caller that loads a
codec (the pipeline, the tower, the trainers, the benchmarks, the CLI) takes any learned base unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .._config import describe, read_json
from ..errors import ConfigError
from .configuration import CONFIG_NAME, MODEL_TYPE, PRESETS
from .dcae_configuration import DCAE_MODEL_TYPE, DCAE_PRESETS

__all__ = ["MODEL_TYPES", "ALL_PRESETS", "codec_class", "model_type_of", "preset_class", "load_codec", "codec_from_preset"]

#: model_type → (module, class) of the codec it builds.
MODEL_TYPES: dict[str, tuple[str, str]] = {
    MODEL_TYPE: (".model", "CoTAMELIC"),
    DCAE_MODEL_TYPE: (".dcae", "CoTAMDCAE"),
}

#: Every preset name, with the model_type it builds.
ALL_PRESETS: dict[str, str] = {**dict.fromkeys(PRESETS, MODEL_TYPE), **dict.fromkeys(DCAE_PRESETS, DCAE_MODEL_TYPE)}


def codec_class(model_type: str) -> type:
    """The codec class of ``model_type`` (a :class:`~cotam_llava.codec.model.CoTAMELIC` or a subclass)."""
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise ConfigError(f"unknown codec model_type {describe(model_type)}; known: {', '.join(MODEL_TYPES)}")
    module, name = MODEL_TYPES[model_type]
    return getattr(importlib.import_module(module, __package__), name)


def model_type_of(directory: str | Path) -> str:
    """The ``model_type`` of the checkpoint in ``directory`` (``cotam-elic`` when the key is absent).

    Reads ``config.json`` with the same size cap as the config loaders; the full validation happens when the
    codec class loads it.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {directory}")
    data = read_json(path, "codec config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a codec config is a JSON object, got {type(data).__name__}")
    model_type = data.get("model_type", MODEL_TYPE)
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise ConfigError(f"{path}: unknown codec model_type {describe(model_type)}; known: {', '.join(MODEL_TYPES)}")
    return model_type


def preset_class(name: str) -> type:
    """The codec class a preset builds."""
    if not isinstance(name, str) or name not in ALL_PRESETS:
        raise ConfigError(f"unknown preset {describe(name)}; choose from {', '.join(ALL_PRESETS)}")
    return codec_class(ALL_PRESETS[name])


def load_codec(directory: str | Path, map_location: Any = "cpu"):
    """Load any learned codec checkpoint (config.json + model.safetensors), validated as untrusted input."""
    return codec_class(model_type_of(directory)).from_pretrained(directory, map_location=map_location)


def codec_from_preset(name: str, seed: int | None = None, **overrides: Any):
    """A freshly initialised codec of any preset (``elic``, ``elic-small``, ``tiny``, ``dcae``, ``dcae-small``, …)."""
    return preset_class(name).from_preset(name, seed=seed, **overrides)
