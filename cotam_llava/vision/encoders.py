"""One interface over the MLLM vision encoders CoTAM feeds: CLIP, SigLIP, InternViT and DINOv2.

CoTAM adds the adapter's enhancement to the encoder's *embedding output* (the layer-0 tokens) of the
decoded image x̂ and lets the remaining layers run unchanged (paper §3.3)::

    x̂ ─embeddings─▶ tokens (B, T, D) ──(+ adapter(ŷ))──▶ [pre-LN] ─▶ layers ─▶ hidden states, pooled

Rather than re-implement each family's forward (CLIP's pre-LayerNorm, SigLIP's pooling head,
InternViT's layer scales, DINOv2's registers), :func:`run_with_embedding_delta` runs the stock module
with a forward hook on its embeddings module that adds the delta. The output is therefore exactly what
the stock model returns (same class, same ``hidden_states`` tuple), so a host's
``vision_feature_layer`` / ``vision_feature_select_strategy`` logic works unchanged, and a zero delta
reproduces the stock model bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["EncoderSpec", "encoder_spec", "embed", "run_with_embedding_delta", "SUPPORTED_ENCODERS"]

#: transformers class name → family.
SUPPORTED_ENCODERS = {
    "CLIPVisionModel": "clip",
    "SiglipVisionModel": "siglip",
    "InternVLVisionModel": "internvl",
    "Dinov2Model": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
}


@dataclass(frozen=True)
class EncoderSpec:
    """What CoTAM needs to know about a vision encoder.

    Attributes:
        family: "clip", "siglip", "internvl" or "dinov2".
        embeddings: the module whose output are the layer-0 tokens (B, T, D).
        hidden_size: D.
        patch_size: pixels per patch side.
        image_size: the encoder's native input side (pixels).
        num_prefix_tokens: tokens before the patch tokens ([CLS] and registers); 0 for SigLIP.
        has_cls: whether the first token is a [CLS] token.
    """

    family: str
    embeddings: nn.Module
    hidden_size: int
    patch_size: int
    image_size: int
    num_prefix_tokens: int
    has_cls: bool

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) at the native input size (a strided conv floors)."""
        g = self.image_size // self.patch_size
        return g, g


def _side(value: Any) -> int:
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def encoder_spec(model: nn.Module) -> EncoderSpec:
    """Describe a transformers vision model (CLIPVisionModel, SiglipVisionModel, InternVLVisionModel, Dinov2Model).

    Raises:
        ConfigError: the model is not one of the supported encoders.
    """
    name = type(model).__name__
    family = SUPPORTED_ENCODERS.get(name)
    if family is None:
        raise ConfigError(
            f"unsupported vision encoder {name}; CoTAM supports {', '.join(sorted(SUPPORTED_ENCODERS))}"
        )
    config = model.config
    # transformers 5 flattened CLIP/SigLIP (no ``vision_model`` level); older releases still nest it
    embeddings = getattr(model, "vision_model", model).embeddings
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    has_cls = family != "siglip"
    return EncoderSpec(
        family=family,
        embeddings=embeddings,
        hidden_size=int(config.hidden_size),
        patch_size=_side(config.patch_size),
        image_size=_side(config.image_size),
        num_prefix_tokens=int(has_cls) + registers,
        has_cls=has_cls,
    )


def embed(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """The encoder's embedding output (layer-0 tokens) for normalised pixels.

    Args:
        pixel_values: (B, 3, S, S), normalised as the host's image processor does.

    Returns:
        (B, num_prefix_tokens + gh·gw, D).
    """
    return encoder_spec(model).embeddings(pixel_values)


@contextmanager
def _add_to_output(module: nn.Module, delta: Tensor | None, capture: list[Tensor] | None) -> Iterator[None]:
    def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
        if delta is not None:
            if delta.shape != output.shape:
                raise ConfigError(f"adapter output {tuple(delta.shape)} does not match the embeddings {tuple(output.shape)}")
            output = output + delta.to(output.dtype)
        if capture is not None:
            capture.append(output)
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_with_embedding_delta(
    model: nn.Module,
    pixel_values: Tensor,
    delta: Tensor | None,
    capture_embeddings: list[Tensor] | None = None,
    **kwargs: Any,
) -> Any:
    """Run the stock encoder on ``pixel_values`` with ``delta`` added to its embedding output.

    Args:
        model: a supported transformers vision model.
        pixel_values: (B, 3, S, S) normalised pixels.
        delta: (B, T, D) tokens added to the embedding output, or None for the stock forward.
        capture_embeddings: if given, the (enhanced) embedding output is appended to it (for the
            low-level term of the training loss).
        **kwargs: passed to the model's forward (``output_hidden_states``, ``return_dict``, ...).

    Returns:
        Exactly what ``model(pixel_values, **kwargs)`` returns.
    """
    spec = encoder_spec(model)
    with _add_to_output(spec.embeddings, delta, capture_embeddings):
        return model(pixel_values=pixel_values, **kwargs)


def default_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the encoder's first floating-point parameter."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
