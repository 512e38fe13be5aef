"""Registration of the CoTAM configs, models and processor with transformers' Auto classes.

Its own module because it needs both the models and the processor (which do not import each other).
``import cotam_llava.models`` calls :func:`register_auto_classes`; so does a bare ``import cotam_llava`` through
:mod:`cotam_llava._autoregister` once transformers is imported.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

from .modeling_cotam import BY_HOST, TOWER_RENAMING
from .processing_cotam import CoTAMProcessor

__all__ = ["register_auto_classes"]


def register_auto_classes() -> None:
    """Register the CoTAM configs, models and processor with transformers' Auto classes (idempotent)."""
    for host_type, model_cls in BY_HOST.items():
        cfg = model_cls.config_class
        # the host's checkpoint key conversions (legacy hub layouts) apply to CoTAM folders (by model_type: a stock
        # class reading one gets them) and, followed by the tower's renaming, to the CoTAM class (by class name,
        # which transformers looks up first), so stock checkpoints load and CoTAM folders keep the host's layout;
        # the host base model's own apply to the CoTAM base model, a (mixin, host base) subclass
        conversions = get_checkpoint_conversion_mapping(host_type) or []
        base = model_cls._cotam_base_class
        for name, mapping in (
            (cfg.model_type, conversions),
            (model_cls.__name__, [*conversions, WeightRenaming(*TOWER_RENAMING)]),
            (base.__name__, get_checkpoint_conversion_mapping(base.__bases__[-1].__name__)),
        ):
            if mapping is not None and get_checkpoint_conversion_mapping(name) is None:
                register_checkpoint_conversion_mapping(name, mapping)
        try:
            AutoConfig.register(cfg.model_type, cfg)
        except ValueError:  # already registered
            pass
        for auto, target in ((AutoModelForImageTextToText, model_cls), (AutoProcessor, CoTAMProcessor)):
            try:
                auto.register(cfg, target)
            except ValueError:  # already registered
                pass
