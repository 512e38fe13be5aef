"""LoRA weights of a fine-tuned CoTAM model, in the standard PEFT layout inside the model folder.

::

    FOLDER/                       a CoTAM model folder (see modeling_cotam)
      config.json, model.safetensors, codec/, cotam_processor.json, tokenizer files ...   the base model
      lora/adapter_config.json    peft LoraConfig (target modules, r, alpha; modules_to_save: a projector or a
      lora/adapter_model.safetensors   CoTAM adapter trained in full), written by PeftModel.save_pretrained

``CoTAM*ForConditionalGeneration.from_pretrained(FOLDER)`` loads the base and applies ``lora/`` (unmerged: LoRA
layers in place, the model keeps its class); ``merge_lora=True`` folds them into the weights instead (no LoRA
layers left, plain Linear modules, same outputs); ``apply_lora=False`` loads the base alone. ``lora/`` is the
layout ``peft.PeftModel.from_pretrained(base, FOLDER + "/lora")`` reads, so peft tools work on it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError

__all__ = ["LORA_SUBFOLDER", "find_lora", "apply_lora", "has_unmerged_lora", "require_peft"]

LORA_SUBFOLDER = "lora"
_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def require_peft() -> Any:
    """The ``peft`` module, or a ConfigError saying what to install."""
    try:
        import peft
    except ImportError:
        raise ConfigError("LoRA needs peft: pip install --no-deps peft==0.21.2 (its requirements are in the lock; "
                          "or pip install 'cotam-llava[train]')") from None
    return peft


def find_lora(source: str | os.PathLike, hub_kwargs: dict[str, Any] | None = None) -> Path | None:
    """The ``lora/`` folder of a CoTAM model folder (or hub id), when it has one; None otherwise.

    Raises:
        CheckpointError: ``lora/`` is there but incomplete (no adapter_config.json or adapter_model.safetensors;
            ``adapter_model.bin`` pickles are refused).
    """
    path = Path(source)
    if path.is_dir():
        folder = path / LORA_SUBFOLDER
        if not folder.is_dir():
            return None
        missing = [f for f in _PEFT_FILES if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{folder} is incomplete: no {', '.join(missing)} (LoRA weights are loaded from "
                                  "safetensors only)")
        return folder
    from transformers.utils import cached_file

    hub = dict(hub_kwargs or {})
    config = cached_file(str(source), f"{LORA_SUBFOLDER}/{_PEFT_FILES[0]}", _raise_exceptions_for_missing_entries=False, **hub)
    if config is None:
        return None
    weights = cached_file(str(source), f"{LORA_SUBFOLDER}/{_PEFT_FILES[1]}", _raise_exceptions_for_missing_entries=False, **hub)
    if weights is None:
        raise CheckpointError(f"{source}: {LORA_SUBFOLDER}/ has no {_PEFT_FILES[1]}")
    return Path(config).parent


def apply_lora(model: Any, folder: str | os.PathLike, merge: bool = False) -> Any:
    """Apply the LoRA weights of ``folder`` (the PEFT layout) to ``model``; returns the model (same class).

    Args:
        merge: fold the LoRA deltas (and the modules trained in full) into the weights, leaving no LoRA layers.
    """
    import warnings

    peft = require_peft()
    try:
        with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = peft.PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: the LoRA weights do not fit this model: {first}") from exc
    if merge:
        return wrapped.merge_and_unload()
    return wrapped.get_base_model()


def has_unmerged_lora(model: Any) -> bool:
    """Whether ``model`` carries peft layers (LoRA, or modules trained in full) that are not merged."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:
        return False
    return any(isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper)) for m in model.modules())
