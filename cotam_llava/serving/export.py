"""A CoTAM model folder (or a stock host folder) → the stock host folder vLLM loads (its language model runs there).

::

    CoTAM folder: config.json (host + "cotam"), model.safetensors (host + vision_tower.adapter.*), codec/, tokenizer,
                  chat template, processor_config.json ("CoTAMProcessor"), cotam_processor.json
        ─▶ vLLM folder: config.json (the host's: "cotam" removed, model_type / architectures of the stock class),
                        weights with the adapter dropped and the vision model under vision_tower.vision_model.*
                        (the llava-hf layout vLLM's LLaVA and LLaVA-OneVision expect; transformers 5 writes
                        vision_tower.embeddings.*),
                        tokenizer, chat template, processor_config.json naming the host's processor

The vision tower's weights are kept although vLLM never runs them on the CoTAM route (it receives image embeddings),
because vLLM's loader refuses a checkpoint that lacks weights of a module it builds. Shards that need no change are
symlinked, not copied. An export is stamped with its source's fingerprint (paths, sizes, mtimes) and reused while
that matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError

__all__ = ["STOCK_ARCHITECTURES", "SUPPORTED_HOSTS", "vllm_key", "export_for_vllm", "default_export_dir"]

#: CoTAM / host model_type → (stock model_type, vLLM architecture name).
STOCK_ARCHITECTURES = {
    "cotam_llava": ("llava", "LlavaForConditionalGeneration"),
    "llava": ("llava", "LlavaForConditionalGeneration"),
    "cotam_llava_onevision": ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
    "llava_onevision": ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
    "cotam_internvl": ("internvl", "InternVLForConditionalGeneration"),
    "internvl": ("internvl", "InternVLForConditionalGeneration"),
}
#: stock hosts whose vLLM model reads the vision tower in transformers' own layout (vLLM serves transformers-format
#: InternVL with its InternS1 model, whose vision model is named like transformers')
_TRANSFORMERS_TOWER_LAYOUT = {"internvl"}
#: Hosts ``cotam serve`` serves (the embedding route is verified for these).
SUPPORTED_HOSTS = tuple(sorted({v[0] for v in STOCK_ARCHITECTURES.values()}))

_STAMP = ".cotam-vllm-export.json"
_EXPORT_VERSION = 1
_ADAPTER = re.compile(r"^(?:model\.)?vision_tower\.(?:vision_model\.)?adapter\.")
_TOWER = re.compile(r"^(?P<prefix>(?:model\.)?vision_tower\.)(?!vision_model\.)")
#: files copied as they are (tokenizer, chat template, generation settings)
_COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
           "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
           "preprocessor_config.json", "video_preprocessor_config.json")


def vllm_key(key: str, rename_tower: bool = True) -> str | None:
    """The name vLLM's LLaVA loads a checkpoint key under; None for a key it must not see (the adapter's).
    ``rename_tower=False`` keeps the vision tower's names (hosts in ``_TRANSFORMERS_TOWER_LAYOUT``).

    >>> vllm_key("vision_tower.embeddings.patch_embedding.weight")
    'vision_tower.vision_model.embeddings.patch_embedding.weight'
    >>> vllm_key("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias")
    'model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias'
    >>> vllm_key("vision_tower.adapter.proj_in.weight") is None
    True
    """
    if _ADAPTER.match(key):
        return None
    return _TOWER.sub(r"\g<prefix>vision_model.", key, count=1) if rename_tower else key


def _fingerprint(source: Path) -> str:
    h = hashlib.sha256(str(source.resolve()).encode())
    for p in sorted(source.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(_EXPORT_VERSION).encode())
    return h.hexdigest()


def default_export_dir(source: str | os.PathLike) -> Path:
    """``$COTAM_SERVE_CACHE`` (default ``~/.cache/cotam/vllm``) / a name from the source folder's path."""
    root = Path(os.environ.get("COTAM_SERVE_CACHE", Path.home() / ".cache" / "cotam" / "vllm"))
    src = Path(source).expanduser().resolve()
    return root / f"{src.name}-{hashlib.sha256(str(src).encode()).hexdigest()[:12]}"


def _stock_config(config: dict[str, Any]) -> dict[str, Any]:
    model_type = config.get("model_type")
    if model_type not in STOCK_ARCHITECTURES:
        raise ConfigError(f"cotam serve serves LLaVA, LLaVA-OneVision and InternVL hosts ({', '.join(SUPPORTED_HOSTS)}); "
                          f"this model is {model_type!r}")
    stock_type, arch = STOCK_ARCHITECTURES[model_type]
    out = {k: v for k, v in config.items() if k not in ("cotam", "auto_map")}
    out["model_type"] = stock_type
    out["architectures"] = [arch]
    return out


def _shards(source: Path) -> tuple[list[str], dict[str, Any] | None]:
    index = source / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        return sorted(set(data["weight_map"].values())), data
    if (source / "model.safetensors").is_file():
        return ["model.safetensors"], None
    raise CheckpointError(f"{source} has no model.safetensors (or shard index): cotam serve needs safetensors weights")


def export_for_vllm(source: str | os.PathLike, dest: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write (or reuse) the stock host folder vLLM loads for a CoTAM (or stock LLaVA) model folder.

    Args:
        source: a local CoTAM model folder (``save_pretrained`` of model and processor) or stock LLaVA folder.
        dest: where to write it (default :func:`default_export_dir`); emptied first when its stamp does not match.
        force: rewrite even when the stamp matches.

    Returns:
        The folder to pass to vLLM as ``--model``.

    Raises:
        CheckpointError: the source is not a model folder with safetensors weights.
        ConfigError: the host is not one ``cotam serve`` supports.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = Path(source).expanduser()
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src} is not a model folder (no config.json)")
    config = _stock_config(json.loads((src / "config.json").read_text()))
    rename_tower = config["model_type"] not in _TRANSFORMERS_TOWER_LAYOUT
    out = Path(dest) if dest is not None else default_export_dir(src)
    fingerprint = _fingerprint(src)
    stamp = out / _STAMP
    if not force and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
                return out
        except (OSError, ValueError):
            pass
    if out.exists():
        if not stamp.is_file() and any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not a cotam serve export: choose another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)

    shards, index = _shards(src)
    new_map: dict[str, str] = {}
    renamed = dropped = 0
    for shard in shards:
        with safe_open(str(src / shard), "pt") as f:
            keys = list(f.keys())
            names = {k: vllm_key(k, rename_tower) for k in keys}
            if all(names[k] == k for k in keys):
                os.symlink((src / shard).resolve(), out / shard)
                new_map.update({k: shard for k in keys})
                continue
            tensors = {}
            for k in keys:
                name = names[k]
                if name is None:
                    dropped += 1
                    continue
                renamed += name != k
                tensors[name] = f.get_tensor(k)
                new_map[name] = shard
            metadata = f.metadata() or {}
        save_file(tensors, str(out / shard), metadata={**metadata, "format": "pt"})
    if index is not None:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": index.get("metadata", {}), "weight_map": dict(sorted(new_map.items()))}, indent=2))

    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in _COPIED:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    proc = src / "processor_config.json"
    if proc.is_file():
        data = json.loads(proc.read_text())
        info = src / "cotam_processor.json"
        if info.is_file():  # a CoTAMProcessor folder: name the host's processor class for vLLM
            data["processor_class"] = json.loads(info.read_text()).get("host_processor_class", "LlavaProcessor")
        (out / "processor_config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "source": str(src.resolve()), "renamed": renamed,
                                 "dropped": dropped, "version": _EXPORT_VERSION}, indent=2) + "\n")
    return out
