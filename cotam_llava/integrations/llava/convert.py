"""CoTAM LLaVA folders between the transformers layout and the original LLaVA code base's layout.

::

    transformers layout (CoTAMLlavaForConditionalGeneration.save_pretrained + CoTAMProcessor.save_pretrained)
        config.json (LlavaConfig + cotam), model.safetensors, codec/, tokenizer files
      ─to_original─▶
    original layout (what llava.model.builder.load_pretrained_model and train.py read; the folder name must
    contain "llava", as LLaVA's loader picks its model class by name)
        config.json           LlavaConfig (model_type llava_llama): the Llama text config + mm_* fields,
                              mm_vision_tower: "cotam_tower" (resolved relative to this folder by the patched builder)
        model.safetensors     model.* (Llama), lm_head, model.mm_projector.{0,2} (mlp2x_gelu)
        tokenizer files       the same tokenizer
        cotam_tower/          the CoTAM tower folder (CLIP encoder, adapter, codec; see tower.py)
      ─to_transformers─▶ back (the image token the transformers layout needs is the tokenizer's "<image>" token)

Weights are copied bit for bit both ways; :func:`to_original` then :func:`to_transformers` gives the same state dict.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, ConfigError
from .tower import TOWER_FILE, load_tower, read_tower_folder, save_tower_folder

__all__ = ["to_original", "to_transformers", "TOWER_SUBFOLDER"]

TOWER_SUBFOLDER = "cotam_tower"
_SELECT = {"default": "patch", "full": "cls_patch"}
_PROJECTOR = {  # transformers LlavaMultiModalProjector ↔ LLaVA's mlp2x_gelu nn.Sequential
    "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")


def _fresh(folder: Path) -> Path:
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty: choose a new output folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _copy_tokenizer(src: Path, dst: Path) -> None:
    found = [name for name in _TOKENIZER_FILES if (src / name).is_file()]
    if not any(n in found for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(f"{src}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    for name in found:
        shutil.copy2(src / name, dst / name)


def to_original(src: str | os.PathLike, dst: str | os.PathLike, image_aspect_ratio: str = "square") -> Path:
    """A transformers-layout CoTAM LLaVA folder → the original LLaVA layout (a new folder ``dst``).

    Args:
        src: a folder saved by ``CoTAMLlavaForConditionalGeneration.save_pretrained`` (with the tokenizer files
            ``CoTAMProcessor.save_pretrained`` writes).
        dst: the new folder; its name should contain "llava" (LLaVA's loader dispatches on the name).
        image_aspect_ratio: what LLaVA's ``process_images`` does to pictures: 'square' (the host processor's
            resize + centre crop — what the transformers processor does), 'pad' (pad to a square first), 'anyres'.

    Raises:
        CheckpointError / ConfigError: not a CoTAM LLaVA folder, a projector or feature layer LLaVA 1.2.2 cannot
            express, an output folder that is not empty.
    """
    from safetensors.torch import save_file

    from ...models import CoTAMLlavaForConditionalGeneration

    src_path, dst_path = Path(src), Path(dst)
    config_file = src_path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{src_path}: no config.json")
    raw = json.loads(config_file.read_text(encoding="utf-8"))
    if raw.get("model_type") != "cotam_llava" and not raw.get("cotam"):
        raise CheckpointError(f"{src_path}: not a CoTAM LLaVA folder (model_type {raw.get('model_type')!r}, no cotam entry)")
    if image_aspect_ratio not in ("square", "pad", "anyres"):
        raise ConfigError(f"image_aspect_ratio must be square, pad or anyres, got {image_aspect_ratio!r}")
    model = CoTAMLlavaForConditionalGeneration.from_pretrained(src_path, dtype=torch.float32)
    cfg = model.config
    if cfg.projector_hidden_act != "gelu" or getattr(cfg, "multimodal_projector_bias", True) is False:
        raise ConfigError(f"LLaVA 1.2.2 has no projector for act={cfg.projector_hidden_act!r} without bias; only mlp2x_gelu")
    layer = cfg.vision_feature_layer
    if not isinstance(layer, int):
        raise ConfigError(f"vision_feature_layer {layer!r}: LLaVA 1.2.2 selects one layer")
    if cfg.vision_feature_select_strategy not in _SELECT:
        raise ConfigError(f"vision_feature_select_strategy {cfg.vision_feature_select_strategy!r} has no LLaVA equivalent")
    if cfg.text_config.model_type != "llama":
        raise ConfigError(f"the text model is {cfg.text_config.model_type!r}; this conversion writes LlavaLlamaForCausalLM")
    out = _fresh(dst_path)
    save_tower_folder(model.vision_tower, out / TOWER_SUBFOLDER)

    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.vision_tower."):
            continue
        if key.startswith("model.language_model."):
            new = "model." + key[len("model.language_model."):]
        elif key.startswith("lm_head."):
            new = key
        else:
            prefix = next((p for p in _PROJECTOR if key.startswith(p)), None)
            if prefix is None:
                raise ConfigError(f"{src_path}: weight {key} has no place in the original LLaVA layout")
            new = _PROJECTOR[prefix] + key[len(prefix):]
        state[new] = value.detach().cpu().clone().contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    text = cfg.text_config.to_dict()
    for key in ("model_type", "architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    llava = {
        **text,
        "model_type": "llava_llama",
        "architectures": ["LlavaLlamaForCausalLM"],
        "torch_dtype": str(model.dtype).replace("torch.", ""),
        "mm_vision_tower": TOWER_SUBFOLDER,
        "mm_hidden_size": int(cfg.vision_config.hidden_size),
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": int(layer),
        "mm_vision_select_feature": _SELECT[cfg.vision_feature_select_strategy],
        "mm_patch_merge_type": "flat",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "image_aspect_ratio": image_aspect_ratio,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_cache": True,
        "cotam_image_token_index": int(cfg.image_token_index),
    }
    (out / "config.json").write_text(json.dumps(llava, indent=2) + "\n", encoding="utf-8")
    _copy_tokenizer(src_path, out)
    return out


def to_transformers(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """The original LLaVA layout (a folder :func:`to_original` wrote, or LLaVA's train.py saved with a CoTAM tower)
    → a transformers-layout CoTAM folder (``CoTAMLlavaForConditionalGeneration`` + ``CoTAMProcessor``).

    The transformers layout marks image positions with a vocabulary token: the tokenizer's ``<image>`` token (or
    ``cotam_image_token_index`` when :func:`to_original` recorded it). A tokenizer without one is an error (add the
    token and resize the embeddings first; transformers' own ``convert_llava_weights_to_hf`` does the same).

    Raises:
        CheckpointError / ConfigError: not an original-layout LLaVA folder with a CoTAM tower, unsupported settings.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlavaProcessor

    from ...models import CoTAMLlavaForConditionalGeneration, CoTAMProcessor
    from ...models.configuration_cotam import CoTAMLlavaConfig
    from .tower import resolve_cotam_tower

    src_path, dst_path = Path(src), Path(dst)
    config_file = src_path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{src_path}: no config.json")
    raw: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    if raw.get("model_type") != "llava_llama":
        raise CheckpointError(f"{src_path}: not an original LLaVA (llava_llama) folder (model_type {raw.get('model_type')!r})")

    class _Names:  # resolve_cotam_tower reads config._name_or_path
        _name_or_path = str(src_path)

    tower_dir = resolve_cotam_tower(raw.get("mm_vision_tower"), _Names())
    if tower_dir is None:
        raise CheckpointError(f"{src_path}: mm_vision_tower {raw.get('mm_vision_tower')!r} is not a CoTAM tower folder "
                              f"(no {TOWER_FILE})")
    if raw.get("mm_projector_type") != "mlp2x_gelu":
        raise ConfigError(f"mm_projector_type {raw.get('mm_projector_type')!r}: only mlp2x_gelu maps onto transformers' LLaVA")
    if raw.get("mm_patch_merge_type", "flat") != "flat" or raw.get("image_aspect_ratio") == "anyres":
        raise ConfigError("AnyRes LLaVA folders (LLaVA-NeXT) are not converted; only flat, square or pad ones")
    if raw.get("mm_use_im_start_end"):
        raise ConfigError("mm_use_im_start_end=True has no equivalent in transformers' LlavaForConditionalGeneration")
    select = {v: k for k, v in _SELECT.items()}.get(raw.get("mm_vision_select_feature", "patch"))
    if select is None:
        raise ConfigError(f"mm_vision_select_feature {raw.get('mm_vision_select_feature')!r}")
    from ..._transformers import quiet_transformers

    with quiet_transformers():  # config.json is a llava_llama one, which transformers itself does not know
        tokenizer = AutoTokenizer.from_pretrained(str(src_path))
    token = raw.get("cotam_image_token_index")
    if token is None:
        token = tokenizer.convert_tokens_to_ids("<image>")
        if token is None or token == tokenizer.unk_token_id:
            raise ConfigError(f"{src_path}: the tokenizer has no <image> token; add it (and resize the embeddings) first")
    folder = read_tower_folder(tower_dir)
    tower = load_tower(tower_dir)
    weights = src_path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{src_path}: no model.safetensors (sharded or .bin checkpoints: load and save them first)")
    state = load_file(str(weights))

    text = {k: v for k, v in raw.items() if not k.startswith(("mm_", "cotam_")) and k not in (
        "model_type", "architectures", "use_mm_proj", "image_aspect_ratio", "tokenizer_padding_side",
        "tokenizer_model_max_length", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "image_grid_pinpoints",
        "torch_dtype", "dtype", "transformers_version", "_name_or_path")}
    side = tower.input_side
    patches = (side // tower.patch_size) ** 2 + (1 if select == "full" else 0)
    config = CoTAMLlavaConfig(
        vision_config=tower.encoder.config.to_dict(), text_config={"model_type": "llama", **text},
        image_token_index=int(token), image_seq_length=patches, projector_hidden_act="gelu",
        vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)), vision_feature_select_strategy=select,
        cotam=folder.cotam.to_dict())
    model = CoTAMLlavaForConditionalGeneration(config)
    model.model.vision_tower.encoder.load_state_dict(tower.encoder.state_dict())
    model.model.vision_tower.adapter.load_state_dict(tower.adapter.state_dict())
    inverse = {v: k for k, v in _PROJECTOR.items()}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("model.vision_tower."):
            continue  # LLaVA's training saves the (frozen) tower too; the tower folder is the source of truth
        prefix = next((p for p in inverse if key.startswith(p)), None)
        if prefix is not None:
            mapped[inverse[prefix] + key[len(prefix):]] = value
        elif key.startswith("model."):
            mapped["model.language_model." + key[len("model."):]] = value
        elif key.startswith("lm_head."):
            mapped[key] = value
        else:
            raise ConfigError(f"{src_path}: weight {key} has no place in the transformers layout")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("model.vision_tower.")]
    if missing or unexpected:
        raise CheckpointError(f"{src_path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.text_config.tie_word_embeddings:
        model.tie_weights()
    model.vision_tower.set_codec(tower.codec)
    out = _fresh(dst_path)
    model.save_pretrained(out)
    host = LlavaProcessor(image_processor=tower.image_processor, tokenizer=tokenizer, patch_size=tower.patch_size,
                          num_additional_image_tokens=1, vision_feature_select_strategy=select,
                          chat_template=getattr(tokenizer, "chat_template", None))
    CoTAMProcessor(host, model.vision_tower.cotam_config, model.codec).save_pretrained(out)
    return out
