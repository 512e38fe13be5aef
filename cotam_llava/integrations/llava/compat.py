"""Shim: what transformers 5.x and torch 2.x changed in the parts of LLaVA 1.2.2 that CoTAM uses."""

from __future__ import annotations

_INSTALLED = False


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    import transformers.pytorch_utils as pytorch_utils
    import transformers.trainer as trainer

    if not hasattr(trainer, "ALL_LAYERNORM_LAYERS"):
        trainer.ALL_LAYERNORM_LAYERS = pytorch_utils.ALL_LAYERNORM_LAYERS
    _INSTALLED = True
