"""Configs of CoTAM-enabled LLaVA-family models: the host's own config plus a ``cotam`` entry.

Each class subclasses its host's config (so every host field, sub-config and default is unchanged) and
adds ``cotam``: a :class:`~cotam_llava.vision.tower_config.CoTAMTowerConfig` as a dict (adapter shape, the host
image processor, edge canvas, default quality, guidance). A folder saved by a CoTAM model is therefore
self-describing: ``config.json`` (host + cotam), ``model.safetensors`` (host + adapter weights) and
``codec/`` (the codec checkpoint).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import InternVLConfig, LlavaConfig, LlavaOnevisionConfig

from ..codec.configuration import CODEC_SUBFOLDER

__all__ = ["CoTAMLlavaConfig", "CoTAMLlavaOnevisionConfig", "CoTAMInternVLConfig", "CODEC_SUBFOLDER"]


@strict
class CoTAMLlavaConfig(LlavaConfig):
    """:class:`transformers.LlavaConfig` (LLaVA-1.5: CLIP + Llama) with a CoTAM tower."""

    model_type = "cotam_llava"
    cotam: dict | None = None


@strict
class CoTAMLlavaOnevisionConfig(LlavaOnevisionConfig):
    """:class:`transformers.LlavaOnevisionConfig` (SigLIP + Qwen2, AnyRes and video) with a CoTAM tower."""

    model_type = "cotam_llava_onevision"
    cotam: dict | None = None


@strict
class CoTAMInternVLConfig(InternVLConfig):
    """:class:`transformers.InternVLConfig` (InternViT + Qwen2) with a CoTAM tower."""

    model_type = "cotam_internvl"
    cotam: dict | None = None
