"""Shallow-attention guidance: which regions a frozen ViT's first layers attend to.

CoTAM §3.2: the mean [CLS]→patch attention of the first K = 3 layers of the MLLM's own
vision encoder (CLIP ViT-L/14@336 for LLaVA-1.5) predicts which regions the MLLM will
need; the codec spends more bits there. Only those K layers are loaded and kept, so an
edge device never holds the whole ViT::

    image ─resize to the ViT input, normalise─▶ embeddings ─layers 0..K−1 (eager attention)─▶
        A_l (B, heads, T, T) ─mean over heads and l─▶ row of [CLS] over the patches ─▶ (B, gh, gw)

Encoders without a [CLS] token (SigLIP) use instead the mean attention each patch
*receives* (averaged over all queries), which plays the same role. Register tokens
(DINOv2 with registers) are skipped.

Supported: ``CLIPVisionModel``, ``SiglipVisionModel``, ``InternVLVisionModel`` (InternViT),
``Dinov2Model`` and ``Dinov2WithRegistersModel`` from transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ...encoders import family_of, load_vision_encoder, num_prefix_tokens, pair, patch_grid, truncate_layers
from ...errors import ConfigError
from ...imageio import ImageLike, to_pil
from .configuration import GuidanceConfig

__all__ = ["ShallowAttentionGuidance", "DEFAULT_GUIDANCE_MODEL"]

#: What users of LLaVA-1.5 should pass to :meth:`ShallowAttentionGuidance.from_pretrained`.
DEFAULT_GUIDANCE_MODEL = "openai/clip-vit-large-patch14-336"


class ShallowAttentionGuidance(nn.Module):
    """Importance maps from the first K layers of a frozen vision transformer.

    Args:
        encoder: a supported transformers vision model; it is truncated in place to its
            first ``config.num_layers`` layers, switched to eager attention, frozen.
        config: guidance settings (K, grid, levels, k, step, normalisation).
    """

    def __init__(self, encoder: nn.Module, config: GuidanceConfig | None = None) -> None:
        super().__init__()
        self.config = config or GuidanceConfig()
        family = family_of(encoder)
        self.family = family.name
        truncate_layers(encoder, self.config.num_layers)
        encoder.config._attn_implementation = "eager"  # attention weights are needed
        self.encoder = encoder.eval().requires_grad_(False)
        mean, std = self.config.image_mean or family.image_mean, self.config.image_std or family.image_std
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.input_size = (self.config.image_size,) * 2 if self.config.image_size else pair(encoder.config.image_size)
        try:
            self.patch_grid = patch_grid(encoder.config, self.input_size)
        except ConfigError as exc:
            raise ConfigError(f"guidance {exc}") from None
        self.num_prefix = num_prefix_tokens(encoder.config, family)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, config: GuidanceConfig | None = None, **kwargs) -> "ShallowAttentionGuidance":
        """Load only the first K layers of a vision encoder from the hub or a folder.

        ``name_or_path`` may be a full CLIP / SigLIP checkpoint (its vision tower is used),
        a vision-only checkpoint, or an InternVL / DINOv2 one. Other kwargs go to
        ``from_pretrained`` (e.g. ``local_files_only=True``, ``torch_dtype``).
        """
        config = config or GuidanceConfig()
        return cls(load_vision_encoder(name_or_path, num_layers=config.num_layers, **kwargs), config)

    # ------------------------------------------------------------------ maps
    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """Images → pixel values (B, 3, H_in, W_in): bicubic resize to the ViT input, normalised."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        h, w = self.input_size
        batch = []
        for image in images:
            pil = to_pil(image).resize((w, h), Image.BICUBIC)
            batch.append(torch.from_numpy(np.asarray(pil, dtype=np.float32).copy()).permute(2, 0, 1))
        x = torch.stack(batch).div_(255.0).to(self.image_mean.device)
        return (x - self.image_mean) / self.image_std

    @torch.no_grad()
    def attention_map(self, pixel_values: Tensor) -> Tensor:
        """Mean shallow attention on the patch grid.

        Args:
            pixel_values: (B, 3, H_in, W_in), normalised as the encoder expects.

        Returns:
            (B, gh, gw) float, gh × gw the encoder's patch grid (e.g. 24 × 24 for CLIP-L/14@336).
        """
        out = self.encoder(pixel_values=pixel_values, output_attentions=True)
        if not out.attentions:
            raise ConfigError(f"{type(self.encoder).__name__} returned no attention weights (needs eager attention)")
        attn = torch.stack([a.float() for a in out.attentions]).mean(dim=(0, 2))  # (B, T, T)
        p = self.num_prefix
        if self.family == "siglip":
            scores = attn.mean(dim=1)  # attention each patch receives, averaged over queries
        else:
            scores = attn[:, 0, p:]  # [CLS] → patches
        gh, gw = self.patch_grid
        if scores.shape[-1] != gh * gw:
            raise ConfigError(f"expected {gh * gw} patch tokens, got {scores.shape[-1]}")
        return scores.reshape(-1, gh, gw)

    def forward(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """Continuous importance maps (B, gh, gw) of images (paths, PIL, arrays or tensors)."""
        return self.attention_map(self.preprocess(images))
