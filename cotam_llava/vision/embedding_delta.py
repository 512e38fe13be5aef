"""The tower's hook on the stock encoder: the adapter's enhancement added to its embedding output.

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
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..encoders import encoder_spec
from ..errors import ConfigError

__all__ = ["embed", "run_with_embedding_delta", "default_dtype"]

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
