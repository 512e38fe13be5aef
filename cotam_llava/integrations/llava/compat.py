"""Shim: what transformers 5.x and torch 2.x changed in the parts of LLaVA 1.2.2 that CoTAM uses.

``llava-torch`` 1.2.2.post1 pins transformers 4.36/4.37 and torch 2.0/2.1; cotam-llava runs transformers 5.23 and
torch 2.13. Inference (``LlavaLlamaForCausalLM`` forward / ``generate``, ``load_pretrained_model``,
``process_images``, ``tokenizer_image_token``, the conversation templates) runs unchanged; the training path does
not. The patched LLaVA calls :func:`install` (from ``llava/__init__.py``, ``llava/train/llava_trainer.py`` and
``llava/train/train.py``), which fixes exactly these, each only where it is broken:

========================================  ========================================================================
what broke                                the fix
========================================  ========================================================================
``transformers.trainer.ALL_LAYERNORM_     ``llava_trainer.py`` imports it from ``transformers.trainer``; transformers 5
LAYERS`` (ImportError)                    keeps it in ``transformers.pytorch_utils`` only: re-exported there.
``Trainer(tokenizer=...)`` (TypeError)    transformers 5 renamed it ``processing_class``: ``LLaVATrainer.__init__``
                                          maps one onto the other.
``LLaVATrainer._get_train_sampler(self)``  transformers 5 passes the data set (``_get_train_sampler(train_dataset)``):
                                          the override accepts it and hands it on.
``LLaVATrainer._save_checkpoint(model,    transformers 5 dropped ``metrics``: the override's call to the base class
trial, metrics)``                         drops it too.
``maybe_zero_3`` imports deepspeed        (``train.py`` and ``llava_trainer.py``, on saving the projector) deepspeed is
                                          a training extra LLaVA does not declare and nothing here needs: without it
                                          (or for parameters that are not ZeRO-3 partitioned) the tensor is copied
                                          to the CPU as the original does; with deepspeed installed, the original runs.
========================================  ========================================================================

Nothing else of transformers or torch is changed, and :func:`install` only touches names that are missing or
signatures that do not fit (running it on an older transformers changes nothing).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from typing import Any

__all__ = ["install", "FIXES"]

#: What :func:`install` fixed so far (module → descriptions); for tests and ``cotam patch-llava --check``.
FIXES: dict[str, list[str]] = {}


def _record(module: str, what: str) -> None:
    FIXES.setdefault(module, [])
    if what not in FIXES[module]:
        FIXES[module].append(what)


def _fix_transformers() -> None:
    import transformers.pytorch_utils as pytorch_utils
    import transformers.trainer as trainer

    if not hasattr(trainer, "ALL_LAYERNORM_LAYERS"):
        trainer.ALL_LAYERNORM_LAYERS = pytorch_utils.ALL_LAYERNORM_LAYERS
        _record("transformers.trainer", "ALL_LAYERNORM_LAYERS re-exported from transformers.pytorch_utils")


def _maybe_zero_3(original: Any) -> Any:
    @functools.wraps(original)
    def maybe_zero_3(param: Any, ignore_status: bool = False, name: str | None = None) -> Any:
        if hasattr(param, "ds_id") and importlib.util.find_spec("deepspeed") is not None:
            return original(param, ignore_status=ignore_status, name=name)
        return param.detach().cpu().clone()

    maybe_zero_3.__cotam_shim__ = True  # type: ignore[attr-defined]
    return maybe_zero_3


def _fix_maybe_zero_3(module: Any) -> None:
    fn = getattr(module, "maybe_zero_3", None)
    if fn is not None and not getattr(fn, "__cotam_shim__", False) and importlib.util.find_spec("deepspeed") is None:
        module.maybe_zero_3 = _maybe_zero_3(fn)
        _record(module.__name__, "maybe_zero_3 without deepspeed")


def _fix_trainer_class(cls: type) -> None:
    from transformers import Trainer

    init_params = inspect.signature(Trainer.__init__).parameters
    if "tokenizer" not in init_params and "processing_class" in init_params and not getattr(cls.__init__, "__cotam_shim__", False):
        original_init = cls.__init__

        @functools.wraps(original_init)
        def __init__(self: Any, *args: Any, tokenizer: Any = None, **kwargs: Any) -> None:
            if tokenizer is not None:
                kwargs.setdefault("processing_class", tokenizer)
            original_init(self, *args, **kwargs)

        __init__.__cotam_shim__ = True  # type: ignore[attr-defined]
        cls.__init__ = __init__
        _record(cls.__module__, "Trainer(tokenizer=...) passed as processing_class")

    sampler = cls.__dict__.get("_get_train_sampler")
    if sampler is not None and len(inspect.signature(sampler).parameters) == 1 and \
            len(inspect.signature(Trainer._get_train_sampler).parameters) > 1:
        def _get_train_sampler(self: Any, train_dataset: Any = None) -> Any:
            if train_dataset is None or train_dataset is self.train_dataset:
                return sampler(self)
            return Trainer._get_train_sampler(self, train_dataset)  # an evaluation-time data set: the base class

        # LLaVA's override calls super()._get_train_sampler() without the data set, which transformers 5 accepts
        cls._get_train_sampler = _get_train_sampler
        _record(cls.__module__, "_get_train_sampler(train_dataset)")

    save = cls.__dict__.get("_save_checkpoint")
    base_save = inspect.signature(Trainer._save_checkpoint).parameters
    if save is not None and "metrics" not in base_save and not getattr(save, "__cotam_shim__", False):
        def _save_checkpoint(self: Any, model: Any, trial: Any, metrics: Any = None) -> None:
            if getattr(self.args, "tune_mm_mlp_adapter", False):
                return save(self, model, trial)
            return Trainer._save_checkpoint(self, model, trial)

        _save_checkpoint.__cotam_shim__ = True  # type: ignore[attr-defined]
        cls._save_checkpoint = _save_checkpoint
        _record(cls.__module__, "_save_checkpoint(model, trial) without metrics")


def install(module_name: str | None = None) -> None:
    """Apply the fixes (idempotent). Called by the patched LLaVA; ``module_name`` is the calling module
    (``llava.train.llava_trainer`` / ``llava.train.train``), whose own names are fixed too."""
    _fix_transformers()
    module = sys.modules.get(module_name) if module_name else None
    if module is None:
        return
    _fix_maybe_zero_3(module)
    trainer_cls = getattr(module, "LLaVATrainer", None)
    if module_name == "llava.train.llava_trainer" and isinstance(trainer_cls, type):
        _fix_trainer_class(trainer_cls)
