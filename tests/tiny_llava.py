"""The original LLaVA code base (llava-torch 1.2.2.post1) patched in a temporary copy, and tiny checkpoints for it.

The installed ``llava`` package is never modified: :func:`patched_llava_copy` copies it, (reverts a user's patch in
the copy if there is one,) applies ``patches/llava`` there and puts the copy first on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Iterator

from tiny_hosts import TEXT, WORDS, build_cotam

#: Words of LLaVA's vicuna_v1 system prompt, so that its training preprocessing finds no unknown tokens (LLaVA
#: sets pad = unk for v1 and would count every unknown word as padding).
VICUNA_WORDS = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the user's questions.").split()


def installed_llava_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llava")
    assert spec is not None and spec.origin, "llava-torch is in requirements/lock-cpu.txt; install it (make install)"
    return Path(spec.origin).parent


def copy_llava(dest: Path) -> Path:
    """A copy of the installed llava package under ``dest/llava``; returns ``dest``."""
    shutil.copytree(installed_llava_dir(), dest / "llava", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _purge() -> None:
    for name in [n for n in sys.modules if n == "llava" or n.startswith("llava.")]:
        del sys.modules[name]


@contextlib.contextmanager
def patched_llava_copy(dest: Path) -> Iterator[Path]:
    """Copy, patch and import-path the llava package; restores sys.path / sys.modules afterwards."""
    from cotam_llava.integrations.llava.patching import apply_patches, patch_state, revert_patches

    copy_llava(dest)
    if patch_state(dest).state == "applied":  # the user patched the installed package: start from the release
        revert_patches(dest)
    assert patch_state(dest).state == "pristine"
    apply_patches(dest)
    _purge()
    sys.path.insert(0, str(dest))
    try:
        yield dest
    finally:
        sys.path.remove(str(dest))
        _purge()


def llava_tokenizer():
    """A word-level tokenizer that adds <s> like Llama's and knows the vicuna_v1 system prompt's words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(WORDS) + [w for w in dict.fromkeys(VICUNA_WORDS) if w not in WORDS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_llama_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama with :func:`llava_tokenizer` (what LLaVA's projector pre-training starts from)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = llava_tokenizer()
    cfg = transformers.LlamaConfig(**dict(TEXT, vocab_size=len(tokenizer)))
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_cotam_folders(root: Path) -> tuple[Path, Path]:
    """(transformers-layout CoTAM LLaVA folder, its original-layout conversion ``llava-cotam-tiny``)."""
    from cotam_llava.integrations.llava.convert import to_original

    model, processor, _, _ = build_cotam("llava", root)
    hf = root / "cotam-hf"
    model.save_pretrained(hf)
    processor.save_pretrained(hf)
    return hf, to_original(hf, root / "llava-cotam-tiny")
