"""Loading a CoTAM-enabled MLLM and its processor: a CoTAM folder, or a stock host plus a codec.

::

    FOLDER (CoTAM: config.json with ``cotam``, cotam_processor.json, codec/)
        ─AutoModelForImageTextToText / AutoProcessor─▶ model, CoTAMProcessor
    HOST (stock LLaVA / LLaVA-OneVision / InternVL) + CODEC
        ─cotam_class_for(model_type).from_host_pretrained─▶ model; CoTAMProcessor(stock processor, tower, codec)

Used by ``cotam chat``, the lmms-eval plugin, ``cotam train-mllm`` and ``cotam serve``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, CoTAMError
from ..codec.standard import STANDARD_CODECS
from ..shipped import default_codec

__all__ = ["load_cotam"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): absolute, relative with ./.., ~, or more than one '/'."""
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}") from None


def _resolve_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here (use --device cpu)")
    return device


def _without_decoder_layers(config: Any) -> Any:
    """A copy of a host config whose language model has no decoder layers (its layer weights are then unexpected
    keys: skipped, never allocated)."""
    import copy

    config = copy.deepcopy(config)
    text = getattr(config, "text_config", None) or getattr(config, "llm_config", None)
    if text is None or not hasattr(text, "num_hidden_layers"):
        raise ConfigError(f"cannot find the language model's layer count in a {config.model_type!r} config")
    text.num_hidden_layers = 0
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = []
    return config


def load_cotam(
    model: str | os.PathLike,
    cotam: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    language_model_layers: bool = True,
    with_processor: bool = True,
) -> tuple[Any, Any]:
    """Load a CoTAM-enabled model and its :class:`~cotam_llava.models.CoTAMProcessor`.

    Args:
        model: a CoTAM model folder (saved by ``model.save_pretrained`` + ``processor.save_pretrained``) or hub
            id, or a stock LLaVA / LLaVA-OneVision / InternVL checkpoint (folder or hub id).
        cotam: codec checkpoint folder, or ``hevc`` / ``av1`` (a standard base; its adapter reads pixels). With a
            stock host it is required unless a default exists
            (:func:`cotam_llava.shipped.default_codec`); with a CoTAM folder it replaces the folder's own ``codec/``.
        device: "cpu", "cuda", "cuda:1"...; default: cuda when available, else cpu. The codec always
            decodes on the tower's ``decode_device`` (cpu by default).
        dtype: "float32", "bfloat16" or "float16" for the host (the CoTAM tower stays fp32); default
            bfloat16 on cuda, float32 on cpu.
        language_model_layers: False builds the language model with no decoder layers, so their weights are
            never read or allocated (the vision side of a 7B host costs its tower, projector, token embeddings and
            ``lm_head``, not 7B): for callers that run only the tower (``cotam serve``'s front). The model cannot
            generate then.
        with_processor: False skips the processor (returned as None): the cloud side needs only the model, whose
            tower carries its own image processing (a LLaVA-OneVision processor, for one, cannot even be loaded
            without torchvision, which its video processor needs).

    Returns:
        (model in eval mode on ``device``, processor whose edge side uses the model's codec, or None).

    Raises:
        CheckpointError: the model or codec folder is missing or cannot be loaded.
        ConfigError: an unsupported host, device or dtype.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from .._transformers import quiet_transformers, require_hub
    from . import CoTAMProcessor, cotam_class_for  # importing the package registers the Auto classes

    name = os.fspath(model)
    device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    if Path(name).expanduser().exists():
        name = str(Path(name).expanduser())
        if not (Path(name) / "config.json").is_file():
            raise CheckpointError(f"{name} is not a model folder (no config.json)")
    elif _looks_local(name):
        raise CheckpointError(f"model folder not found: {name}")
    codec_path: Path | str | None = None
    if cotam is not None:
        if os.fspath(cotam) in STANDARD_CODECS and not Path(os.fspath(cotam)).exists():
            codec_path = os.fspath(cotam)  # a standard base by name: no folder
        else:
            codec_path = Path(os.fspath(cotam)).expanduser()
            if not (codec_path / "config.json").is_file():
                raise CheckpointError(f"no codec checkpoint at {codec_path} (a codec folder has config.json + "
                                      "model.safetensors), and not hevc / av1")

    require_hub(name)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(name)
            extra = {} if language_model_layers else {"config": _without_decoder_layers(config)}
            if getattr(config, "cotam", None):
                if codec_path is not None:
                    extra["codec"] = str(codec_path)
                net = AutoModelForImageTextToText.from_pretrained(name, dtype=torch_dtype, **extra)
                processor = AutoProcessor.from_pretrained(name, codec=net.codec) if with_processor else None
            else:
                cls = cotam_class_for(config.model_type)
                if codec_path is None:
                    codec_path = default_codec()
                    if codec_path is None:
                        raise ConfigError(
                            f"{name} is a stock {config.model_type!r} checkpoint and the shipped codec is missing from this installation: "
                            "pass --cotam CODEC_FOLDER (`cotam init-codec --preset tiny DIR` makes an untrained one)"
                        )
                    if not (codec_path / "config.json").is_file():
                        raise CheckpointError(f"no codec checkpoint at {codec_path}")
                net = cls.from_host_pretrained(name, str(codec_path), dtype=torch_dtype, **extra)
                processor = (CoTAMProcessor(AutoProcessor.from_pretrained(name), net.vision_tower.cotam_config, net.codec)
                             if with_processor else None)
            net.vision_tower.image_processor  # build the cloud-side image processor now, while transformers is quiet
    except CoTAMError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load model {name}: {first}") from exc
    if with_processor and not isinstance(processor, CoTAMProcessor):
        raise CheckpointError(f"{name}: expected a CoTAMProcessor, got {type(processor).__name__}")
    return net.to(device).eval(), processor


# --------------------------------------------------------------------------- chatting
