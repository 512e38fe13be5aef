"""The tower's configuration (``cotam`` in a CoTAM model's config.json) and the host image processor it rebuilds.

Both sides read it: the edge encoder (canvas, crop, default quality, guidance) and the cloud tower (adapter
shape, the host image processor x̂ goes through). Kept apart from the tower so the edge side needs no tower.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._config import strict_from_dict
from ..errors import ConfigError
from .adapter import LatentAdapterConfig

__all__ = ["CoTAMTowerConfig", "image_processor_from_dict"]


@dataclass
class CoTAMTowerConfig:
    """Everything the edge and cloud sides need besides the weights (stored under ``cotam`` in config.json).

    Args:
        adapter: a :class:`LatentAdapterConfig` as a dict.
        image_processor: the host image processor's ``to_dict()``; the cloud side runs x̂ through it.
        canvas_size: edge-side codec canvas (square side, pixels). Default: 16 × the encoder's patch grid,
            so ŷ maps 1:1 onto the patches (384 for CLIP-L/14@336). None: code at native resolution
            (padded), which AnyRes hosts need for their tiles.
        center_crop: the edge crops the picture to the centred square the host's processor would keep
            before resizing to the canvas (CLIP-style processors), so no coded pixel is thrown away.
        quality: quality level for pixels compressed on the fly (0 = lowest rate, 9 = highest).
        decode_device: where entropy decoding and synthesis run. Bitstreams are only guaranteed to decode
            on the kind of device that encoded them (see the symbol CRC in docs/bitstream.md).
        guidance: the edge-side guidance config (a :class:`GuidanceConfig` dict) or None.
        guidance_model: name or path of the guidance ViT the edge uses (see ``load_guidance``), or None.
    """

    adapter: dict[str, Any]
    image_processor: dict[str, Any]
    canvas_size: int | None = None
    center_crop: bool = False
    quality: int = 6
    decode_device: str = "cpu"
    guidance: dict[str, Any] | None = None
    guidance_model: str | None = None

    def __post_init__(self) -> None:
        LatentAdapterConfig.from_dict(self.adapter)
        if not isinstance(self.image_processor, dict) or "image_processor_type" not in self.image_processor:
            raise ConfigError("image_processor must be an image processor's to_dict() (with image_processor_type)")
        if self.canvas_size is not None and (self.canvas_size < 64 or self.canvas_size % 64):
            raise ConfigError(f"canvas_size must be a positive multiple of 64, got {self.canvas_size}")
        if not 0 <= int(self.quality) <= 9:
            raise ConfigError(f"quality must be in [0, 9], got {self.quality}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoTAMTowerConfig":
        return strict_from_dict(cls, data, "CoTAM tower")


def image_processor_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild a transformers image processor from its ``to_dict()`` (PIL backend when torchvision is absent)."""
    import transformers

    from .._transformers import quiet_transformers

    name = data.get("image_processor_type")
    kwargs = {k: v for k, v in data.items() if k not in ("image_processor_type", "processor_class")}
    with quiet_transformers():  # without torchvision, transformers falls back to the PIL backend (and says so)
        cls = getattr(transformers, str(name), None)
        if cls is None:
            raise ConfigError(f"unknown image processor type {name!r} in the CoTAM config")
        return cls(**kwargs)
