"""One interface over every codec the benchmarks compare.

An :class:`ImageCodec` turns a uint8 (H, W, 3) image into the bytes of a real file
at a quality and back. ``get_codec("jpeg" | "webp" | "avif" | "jxl" | "cotam-elic" | "cotam-dcae" | "hevc" | "av1",
...)`` builds one; learned codecs wrap a :class:`~cotam_llava.codec.model.CoTAMELIC` (``cotam-elic``) or its DCAE
subclass (``cotam-dcae``: the name is the checkpoint's ``model_type``, so tables say which base they measured), the
standard bases a
:class:`~cotam_llava.codec.standard.StandardCodec` (both write real ``.cotam`` files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..imageio import to_uint8_array
from .classical import CLASSICAL_FORMATS, PillowCodec
from .container import serialize
from .model import CoTAMELIC
from .pipeline import container_of, decode, encode_item, pack

__all__ = ["ImageCodec", "LearnedCodec", "StandardImageCodec", "get_codec", "check_learned_name", "CODEC_NAMES",
           "LEARNED_CODEC_NAMES", "STANDARD_CODEC_NAMES"]

#: The standard intra base codecs (``.cotam`` kinds hevc / av1), plain and with guidance (hevc only: AV1 has no
#: per-region quality in this build).
STANDARD_CODEC_NAMES = ("hevc", "av1", "hevc+guidance")
#: The learned codecs by family (each checkpoint's ``model_type``).
LEARNED_CODEC_NAMES = ("cotam-elic", "cotam-dcae")
CODEC_NAMES = (*CLASSICAL_FORMATS, *(n + s for n in LEARNED_CODEC_NAMES for s in ("", "+guidance")),
               *STANDARD_CODEC_NAMES)


def check_learned_name(name: str, model: CoTAMELIC, source: object) -> None:
    """Refuse a learned codec's name that is not its checkpoint's family, so a DCAE is never labelled ``cotam-elic``
    (``source``: where the model came from, for the message)."""
    family = model.config.model_type
    base, plus, rest = name.partition("+")
    if base != family:
        raise ConfigError(f"{name}: {source} is a {family} checkpoint; name it {family}{plus}{rest} instead")


@runtime_checkable
class ImageCodec(Protocol):
    """What the benchmarks need from a codec."""

    name: str

    @property
    def default_qualities(self) -> tuple[int, ...]: ...

    def encode(self, image: np.ndarray, quality: int) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


@dataclass
class LearnedCodec:
    """The learned codec behind the :class:`ImageCodec` interface (one image per container).

    Args:
        model: a finalized :class:`CoTAMELIC`.
        canvas: None for native resolution (padded to ×64), or a canvas side / (w, h).
        name: label used in tables and plots.
        guidance: a ``ShallowAttentionGuidance``; when given, every image gets its guided
            quality map around the requested base quality (the guidance time counts as encode time).
    """

    model: CoTAMELIC
    canvas: int | tuple[int, int] | None = None
    name: str = "cotam-elic"
    guidance: object | None = None

    @property
    def default_qualities(self) -> tuple[int, ...]:
        return tuple(range(self.model.config.num_qualities))

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        return pack(self.model, [encode_item(self.model, image, quality, guidance=self.guidance, canvas=self.canvas).item])

    def coding_stats(self, image: np.ndarray, quality: int) -> dict[str, float]:
        """Where the bits of ``encode(image, quality)`` go (one extra encode; not for timing).

        Returns:
            ``payload_bits`` (real rANS bits), ``estimated_bits`` (−log2 of the model's
            likelihoods of the coded symbols), ``header_bits`` (file and item headers,
            quality map and CRCs included) and ``map_bits``.
        """
        coded = encode_item(self.model, image, quality, guidance=self.guidance, canvas=self.canvas, estimate=True)
        item, latent = coded.item, coded.latent
        container = container_of(self.model, [item])
        serialize(container)  # sets the header sizes
        estimated = float(sum((-lk.clamp_min(1e-9).log2()).sum() for lk in latent.likelihoods.values()))
        return {
            "payload_bits": 8.0 * item.payload_bytes,
            "estimated_bits": estimated,
            "header_bits": 8.0 * (container.file_header_bytes + item.header_bytes),
            "map_bits": float(item.map_bits),
        }

    def decode(self, data: bytes) -> np.ndarray:
        return to_uint8_array(decode(self.model, data)[0].to_pil())


@dataclass
class StandardImageCodec:
    """A standard intra base codec (hevc / av1) behind the :class:`ImageCodec` interface (one image per container).

    Args:
        codec: the :class:`~cotam_llava.codec.standard.StandardCodec`.
        canvas: None for native resolution (padded to ×64), or a canvas side / (w, h).
        name: label used in tables and plots.
        guidance: a ``ShallowAttentionGuidance``; when given, every image gets its guided quality map around the
            requested base quality, realised as per-block QP offsets (the guidance time counts as encode time).
    """

    codec: object
    canvas: int | tuple[int, int] | None = None
    name: str = ""
    guidance: object | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.codec.kind
        _ = self.codec.codec_id  # its one-time probe of the encoder's version happens here, not in a timed encode
        if self.guidance is not None and not self.codec.supports_map:
            raise ConfigError(f"{self.codec.kind} has no per-region quality here, so guidance cannot steer it; use hevc")

    @property
    def default_qualities(self) -> tuple[int, ...]:
        return tuple(range(self.codec.num_qualities))

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        return pack(self.codec, [encode_item(self.codec, image, quality, guidance=self.guidance, canvas=self.canvas).item])

    def decode(self, data: bytes) -> np.ndarray:
        from .standard import decode_arrays

        return decode_arrays(data, kind=self.codec.kind)[0]


def get_codec(name: str, checkpoint: str | Path | None = None, canvas: int | None = None) -> ImageCodec:
    """Build a codec by name; learned codecs need ``checkpoint`` (a folder with config.json + model.safetensors)."""
    if name in CLASSICAL_FORMATS:
        return PillowCodec(name)
    if name in ("hevc", "av1"):
        from .standard import StandardCodec

        return StandardImageCodec(StandardCodec(name), canvas=canvas, name=name)
    if name in LEARNED_CODEC_NAMES:
        if checkpoint is None:
            raise ConfigError("the learned codec needs a checkpoint folder")
        model = CoTAMELIC.from_pretrained(checkpoint)
        check_learned_name(name, model, checkpoint)
        return LearnedCodec(model, canvas=canvas, name=name)
    raise ConfigError(f"unknown codec {name!r}; choose from {', '.join(CODEC_NAMES)}")
