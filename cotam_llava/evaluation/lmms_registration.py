"""How lmms-eval finds the ``cotam_llava`` model: the ``lmms_eval.models`` entry point.

lmms-eval 0.7.3 builds its model registry when ``lmms_eval.models`` is imported and then loads every
entry point of the group ``lmms_eval.models``; an entry point must name a ``ModelManifest``, an
iterable of them, or a *callable returning* them (a model class would be called, i.e. instantiated
with no arguments, so the entry point names :func:`model_manifests`, not the class). ``setup.cfg``::

    [options.entry_points]
    lmms_eval.models =
        cotam_llava = cotam_llava.evaluation.lmms_registration:model_manifests

This module is imported by every ``lmms-eval`` command, so it imports nothing heavy: the model class
(:class:`~cotam_llava.evaluation.lmms_plugin.CoTAMLlavaLMM`, torch, transformers) is imported only when
``--model cotam_llava`` is used.

``lmms-eval models`` prints lmms-eval's built-in name table rather than the registry it resolves models
with, so an entry-point model would be usable but not listed; :func:`model_manifests` therefore also adds
one row to that table, exactly as lmms-eval's own (deprecated) ``LMMS_EVAL_PLUGINS`` loader does for its
plugins. Nothing else in lmms-eval is touched.
"""

from __future__ import annotations

import sys

__all__ = ["MODEL_ID", "CLASS_PATH", "model_manifests"]

MODEL_ID = "cotam_llava"
CLASS_PATH = "cotam_llava.evaluation.lmms_plugin.CoTAMLlavaLMM"


def model_manifests() -> list:
    """The ``ModelManifest`` lmms-eval registers for ``--model cotam_llava`` (a simple, not chat, model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    # Called while lmms_eval.models is being imported: its name tables already exist on the partly
    # initialised module object, so this reads them without importing anything again.
    models_module = sys.modules.get("lmms_eval.models")
    table = getattr(models_module, "AVAILABLE_SIMPLE_MODELS", None)
    if isinstance(table, dict):
        table.setdefault(MODEL_ID, CLASS_PATH)
    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)]
