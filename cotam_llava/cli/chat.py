"""``cotam chat``: one question to a CoTAM-enabled MLLM about an image, a video or a .cotam file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ImageInputError
from ..serving.cli import add_server_argument


def cmd_chat(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if not source.is_file():  # checked before loading a (possibly large) model
        raise ImageInputError(f"input not found: {source}" if not source.exists() else f"input is not a file: {source}")
    if args.server:
        from ..serving.cli import chat_via_server

        return chat_via_server(args)
    if not args.model:
        raise ConfigError("--model is required (without --server the model runs here)")
    from ..models.chat import chat
    from ..models.loading import load_cotam

    model, processor = load_cotam(args.model, args.cotam, device=args.device, dtype=args.dtype)
    result = chat(model, processor, args.input, args.question, quality=args.quality, frames=args.frames,
                  max_new_tokens=args.max_new_tokens, stream=not args.no_stream)
    if args.no_stream:
        print(result.answer)
    what = f"{result.items} video frames" if result.kind == "video" else "image"
    rate = f", {result.bpp:.4f} bpp" if result.bpp is not None else ""
    rate += f", {result.bpp_coded:.4f} bpp of the coded picture" if result.kind == "image" else ""
    print(f"cotam: {Path(args.input).name}: {what}, {result.bits} bits{rate}, quality {result.quality}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add ``chat`` to the ``cotam`` subcommands."""
    p = sub.add_parser("chat", help="ask a CoTAM-enabled MLLM (LLaVA, LLaVA-OneVision, InternVL) about an image, video or .cotam file",
                       description="Ask one question about one input and stream the answer (greedy decoding). INPUT is "
                                   "an image file (png, jpg, ...: coded here by the edge encoder at --quality), a video "
                                   "file (mp4, ...: --frames frames sampled and coded; LLaVA-OneVision hosts only), or a "
                                   ".cotam file (an image or the frames of a video, sent as is). The bits the model read "
                                   "(and bpp, for an image) are reported on stderr. With --server URL the question and "
                                   "the bitstream go to a `cotam serve` server instead (images and .cotam files).")
    p.add_argument("--model", metavar="PATH_OR_HUB_ID",
                   help="a CoTAM model folder (config.json with a cotam entry, cotam_processor.json, codec/), or a "
                        "stock LLaVA / LLaVA-OneVision / InternVL checkpoint used with --cotam (required unless "
                        "--server is given with a .cotam input)")
    p.add_argument("--cotam", metavar="CODEC_DIR|hevc|av1", help="codec for a stock --model: a checkpoint folder, or "
                   "hevc / av1 (a standard base) (default: $COTAM_CHECKPOINT or the shipped "
                   "checkpoints/elic-small); with a CoTAM folder, replaces its codec/")
    p.add_argument("input", metavar="INPUT", help="image file, video file, or .cotam bitstream")
    p.add_argument("question", metavar="QUESTION", help="the question, e.g. \"what is in this picture?\"")
    p.add_argument("--quality", type=int, help="edge quality 0 (fewest bits) .. 9 (best) for images and videos; "
                   "default: the model's (ignored for .cotam inputs)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from a video input (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="host weights dtype (default: bfloat16 on cuda, float32 on cpu); the CoTAM tower stays fp32")
    p.add_argument("--no-stream", action="store_true", help="print the answer once generation ends instead of streaming it")
    add_server_argument(p)
    p.set_defaults(func=cmd_chat)
