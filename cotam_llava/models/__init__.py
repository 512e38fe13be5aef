"""CoTAM-enabled LLaVA-family models for transformers.

Importing this module registers the CoTAM configs, models and processor with transformers' Auto classes
(``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoProcessor``) — the one global change the package
makes, and only when this module is imported — so ``AutoModelForImageTextToText.from_pretrained(folder)``
loads a saved CoTAM model.
"""

from .auto import register_auto_classes
from .configuration_cotam import CODEC_SUBFOLDER, CoTAMInternVLConfig, CoTAMLlavaConfig, CoTAMLlavaOnevisionConfig
from .modeling_cotam import (
    CoTAMInternVLForConditionalGeneration,
    CoTAMLlavaForConditionalGeneration,
    CoTAMLlavaOnevisionForConditionalGeneration,
    cotam_class_for,
    default_tower_config,
)
from .processing_cotam import CoTAMProcessor

register_auto_classes()

__all__ = [
    "CoTAMLlavaConfig",
    "CoTAMLlavaOnevisionConfig",
    "CoTAMInternVLConfig",
    "CoTAMLlavaForConditionalGeneration",
    "CoTAMLlavaOnevisionForConditionalGeneration",
    "CoTAMInternVLForConditionalGeneration",
    "CoTAMProcessor",
    "CODEC_SUBFOLDER",
    "cotam_class_for",
    "default_tower_config",
]
