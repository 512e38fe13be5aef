"""The codec: variable-rate spatially adaptive ELIC and DCAE, bitstream container, classical baselines.

Quick start::

    from cotam_llava.codec import CoTAMELIC, encode, decode
    codec = CoTAMELIC.from_pretrained("checkpoints/elic-small")
    data = encode(codec, "photo.png", quality=6)          # bytes of a .cotam file
    [image] = decode(codec, data)                          # DecodedImage: x̂, ŷ, quality map

Names are imported on first use (PEP 562): reading a container (``codec.container``) needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **dict.fromkeys(("CoTAMCodecConfig", "PRESETS", "PAPER_LAMBDAS"), ".configuration"),
    **dict.fromkeys(("Container", "CodedItem", "ParseLimits", "ResizeMode", "parse", "serialize"), ".container"),
    **dict.fromkeys(("CoTAMELIC", "CodecOutput", "CompressedLatent", "DecompressedLatent"), ".model"),
    "CoTAMDCAE": ".dcae",
    **dict.fromkeys(("CoTAMDCAEConfig", "DCAE_PRESETS"), ".dcae_configuration"),
    **dict.fromkeys(("load_codec", "codec_from_preset"), ".loading"),
    **dict.fromkeys(("compress_image", "encode", "decode", "iter_decode"), ".pipeline"),
    "DecodedImage": ".decoded",
    "QualityMap": ".quality_map",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:  # a submodule (cotam_llava.codec.pipeline, ...) not imported yet
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists but needs something missing
                raise
            raise AttributeError(f"module 'cotam_llava.codec' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
