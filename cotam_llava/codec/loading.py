"""One loader for every base codec: a checkpoint's ``config.json`` names its ``model_type``.

::

    config.json {"model_type": "cotam-elic" | "cotam-dcae" | "cotam-standard", ...} ─model_type_of─▶ codec_class
        ─▶ .from_pretrained                      (load_codec also takes the names "hevc" / "av1": no folder needed)

``CoTAMELIC.from_pretrained`` and ``CoTAMELIC.from_preset`` dispatch through here for the learned bases;
:func:`load_codec` is the loader that takes every kind (the tower, the models, the trainers, the CLI use it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .._config import describe, read_json
from ..errors import CheckpointError, ConfigError
from .configuration import CONFIG_NAME, MODEL_TYPE, PRESETS
from .dcae_configuration import DCAE_MODEL_TYPE, DCAE_PRESETS
from .standard import STANDARD_CODECS, STANDARD_MODEL_TYPE, StandardCodec

__all__ = ["MODEL_TYPES", "ALL_PRESETS", "codec_class", "model_type_of", "preset_class", "load_codec", "hub_codec_folder", "codec_from_preset",
           "is_standard_codec"]

#: model_type → (module, class) of the codec it builds.
MODEL_TYPES: dict[str, tuple[str, str]] = {
    MODEL_TYPE: (".model", "CoTAMELIC"),
    DCAE_MODEL_TYPE: (".dcae", "CoTAMDCAE"),
    STANDARD_MODEL_TYPE: (".standard", "StandardCodec"),
}

#: Every preset name, with the model_type it builds.
ALL_PRESETS: dict[str, str] = {**dict.fromkeys(PRESETS, MODEL_TYPE), **dict.fromkeys(DCAE_PRESETS, DCAE_MODEL_TYPE)}


def codec_class(model_type: str) -> type:
    """The codec class of ``model_type`` (:class:`~cotam_llava.codec.model.CoTAMELIC`, a subclass, or
    :class:`~cotam_llava.codec.standard.StandardCodec`)."""
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


def load_codec(directory: str | Path, map_location: Any = "cpu", revision: str | None = None,
               cache_dir: str | Path | None = None):
    """Load any base codec: a learned checkpoint (config.json + model.safetensors, validated as untrusted input),
    a standard codec's folder, the name ``hevc`` / ``av1`` (when no folder of that name exists), or a hub id
    (``org/name``: a hub model repository holding such a checkpoint at its root; see :func:`hub_codec_folder`)."""
    if str(directory) in STANDARD_CODECS and not Path(directory).exists():
        return StandardCodec(str(directory))
    if not Path(directory).is_dir():
        directory = hub_codec_folder(directory, revision=revision, cache_dir=cache_dir)
    return codec_class(model_type_of(directory)).from_pretrained(directory, map_location=map_location)


def hub_codec_folder(repo_id: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of a codec named by a hub id, offline first.

    When ``config.json`` (and, for a learned codec, ``model.safetensors``) are in the local hub cache, that
    snapshot is used with no network at all; otherwise :func:`~cotam_llava._transformers.require_hub` gives the
    hub :data:`~cotam_llava._transformers.HUB_CHECK_SECONDS` to answer (our error, not retries, when it cannot or
    ``HF_HUB_OFFLINE`` is set) and the two files are downloaded. Only those files are fetched: no code, no pickles.
    """
    text = str(repo_id)
    where = f"checkpoint folder {text} does not exist (a codec folder, hevc / av1, or a hub id org/name)"
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or text.endswith("/"):
        raise CheckpointError(where)
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    from .._transformers import require_hub

    def cached(name: str) -> str | None:
        found = try_to_load_from_cache(text, name, cache_dir=cache_dir, revision=revision)
        return found if isinstance(found, str) else None

    try:
        config = cached(CONFIG_NAME)
    except (HFValidationError, ValueError):
        raise CheckpointError(where) from None
    weights = "model.safetensors"
    try:
        if config is None:
            require_hub(text, cache_dir=cache_dir, revision=revision)
            config = hf_hub_download(text, CONFIG_NAME, revision=revision, cache_dir=cache_dir)
        folder = Path(config).parent
        if model_type_of(folder) != STANDARD_MODEL_TYPE and cached(weights) is None:
            hf_hub_download(text, weights, revision=revision, cache_dir=cache_dir)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}; as a hub id: {exc}") from None
    except OSError as exc:  # huggingface_hub's HTTP and cache errors are OSErrors
        raise CheckpointError(f"{where}; the hub download failed: {exc}") from None
    return folder


def is_standard_codec(codec: Any) -> bool:
    """Whether ``codec`` is a standard base (hevc / av1: pictures, no latent) rather than a learned one."""
    return isinstance(codec, StandardCodec)


def codec_from_preset(name: str, seed: int | None = None, **overrides: Any):
    """A freshly initialised codec of any preset (``elic``, ``elic-small``, ``tiny``, ``dcae``, ``dcae-small``, …)."""
    return preset_class(name).from_preset(name, seed=seed, **overrides)
