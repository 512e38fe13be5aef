"""CoTAM for the original LLaVA code base (haotian-liu/LLaVA; ``llava-torch`` 1.2.2.post1).

``patches/llava/`` adds two routing lines to that code base (apply them with ``cotam patch-llava``):

* ``llava/model/multimodal_encoder/builder.py`` asks :func:`build_vision_tower` first, which builds a
  :class:`~cotam_llava.integrations.llava.tower.CoTAMLlavaVisionTower` when ``mm_vision_tower`` names a CoTAM
  tower folder and returns None otherwise (the stock CLIP path then runs unchanged);
* ``llava/__init__.py`` calls :func:`~cotam_llava.integrations.llava.compat.install`, the shim for what
  transformers 5.x and torch 2.x changed in the parts of LLaVA used (loading, generation, training).

Modules: ``tower`` (tower, image processor, bitstream packing, tower folders), ``compat`` (the shim),
``patching`` (apply / check / revert the patch set), ``convert`` (CoTAM folders between the transformers layout and
LLaVA's own).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_vision_tower"]


def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> Any:
    """A CoTAM tower when ``mm_vision_tower`` names a CoTAM tower folder, else None (see ``tower.build_vision_tower``)."""
    from .tower import build_vision_tower as build

    return build(vision_tower_cfg, **kwargs)
