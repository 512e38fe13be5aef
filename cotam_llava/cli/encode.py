"""``cotam encode``: images and videos → .cotam bitstreams (learned or standard base codec, guidance, tiles)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._config import DEFAULT_GUIDANCE_STEP
from ..errors import ConfigError
from ._common import (
    add_common, check_output, load_codec, make_folder, parse_canvas, parse_tiles, read_quality_map, write_bytes,
)


def _encode_for_model(args: argparse.Namespace, out: Path, single_file: bool) -> int:
    """``cotam encode --model``: exactly what that model's processor codes (its crop or AnyRes tiles, canvas,
    guidance and frame sampling), so the file is the bitstream the model's tower will read."""
    from tqdm.auto import tqdm

    from .._transformers import require_hub
    from ..codec.video import is_video
    from ..models.processing_cotam import CoTAMProcessor

    clashing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--canvas", args.canvas),
                                         ("--quality-map", args.quality_map), ("--guidance", args.guidance),
                                         ("--tiles", args.tiles), ("--entropy-arithmetic", args.entropy_arithmetic))
                if value]
    if args.codec != "learned":
        clashing.append("--codec")
    if clashing:
        raise ConfigError(f"--model codes what that model's tower reads (its codec, canvas, tiles and guidance): "
                          f"drop {', '.join(clashing)}")
    if single_file and len(args.inputs) > 1:
        raise ConfigError("with --model each input is coded as the model would code it, one container each: "
                          "give -o a folder")
    require_hub(args.model)
    processor = CoTAMProcessor.from_pretrained(args.model)
    for path in tqdm(args.inputs, desc="encode", unit="file", disable=len(args.inputs) < 2 or args.quiet):
        if is_video(path):
            [data] = processor.encode_videos([path], num_frames=args.frames, quality=args.quality)
        else:
            [data] = processor.encode_images([path], quality=args.quality)
        target = out if single_file else out / (Path(path).stem + ".cotam")
        write_bytes(target, data)
        if not args.quiet and single_file:
            print(f"{target}: coded for {args.model}, {len(data)} bytes")
    if not args.quiet and not single_file:
        print(f"wrote {len(args.inputs)} .cotam files to {out}/ (coded for {args.model})")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..codec.container import ParseLimits
    from ..codec.video import is_video, read_frames

    single_file = len(args.inputs) == 1 or Path(args.output).suffix == ".cotam"
    out = check_output(args.output, folder=not single_file)
    if not single_file:
        targets: dict[str, str] = {}
        for path in args.inputs:
            other = targets.setdefault(Path(path).stem + ".cotam", path)
            if other != path:
                raise ConfigError(f"{other} and {path} would both be written to {out / (Path(path).stem + '.cotam')}: "
                                  "rename one, or code them into one file with -o NAME.cotam")
    max_frames = ParseLimits().max_items
    if not 1 <= args.frames <= max_frames:
        raise ConfigError(f"--frames must be in [1, {max_frames}] (what a decoder accepts in one container), got {args.frames}")
    if args.model:
        return _encode_for_model(args, out, single_file)
    if args.quality is None:
        args.quality = 6
    canvas = parse_canvas(args.canvas)
    fixed_map = read_quality_map(args.quality_map)
    tiles = parse_tiles(args.tiles)
    if args.codec == "learned":
        codec = load_codec(args.checkpoint)
        if args.entropy_arithmetic:
            codec.set_entropy_arithmetic(args.entropy_arithmetic)
        levels = codec.config.num_qualities
    else:
        from ..codec.standard import StandardCodec

        if args.checkpoint or args.entropy_arithmetic:
            raise ConfigError(f"--checkpoint and --entropy-arithmetic are the learned codec's; --codec {args.codec} "
                              "takes neither")
        codec = StandardCodec(args.codec)
        levels = codec.num_qualities
        if (fixed_map is not None or args.guidance) and not codec.supports_map:
            raise ConfigError(f"--codec {args.codec} has no per-region quality in this build (SVT-AV1 through FFmpeg "
                              "ignores region-of-interest data), so --guidance / --quality-map cannot steer it; "
                              "use --codec hevc")
    if not 0 <= args.quality < levels:
        raise ConfigError(f"--quality must be in [0, {levels - 1}], got {args.quality}")
    if fixed_map is not None and fixed_map.levels()[-1] >= levels:
        raise ConfigError(f"--quality-map uses level {fixed_map.levels()[-1]}; this codec's levels are 0–{levels - 1}")
    guidance = None
    if args.guidance:
        if fixed_map is not None:
            raise ConfigError("--guidance and --quality-map are exclusive")
        from ..codec.guidance import GuidanceConfig, load_guidance
        from ..codec.guidance.configuration import judged_options

        if args.guidance_rule == "host" and tiles is not None:
            raise ConfigError("--guidance-rule host judges one view (no --tiles)")
        guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step, allocation=args.guidance_rule,
                                                               spread=args.guidance_spread,
                                                               **judged_options(args.guidance_candidates)))
    if not single_file:
        make_folder(out)

    from ..codec.pipeline import encode_item, pack

    def code(image, video: bool):
        return encode_item(codec, image, args.quality, quality_map=fixed_map, guidance=guidance, tiles=tiles,
                           canvas=canvas, is_video_frame=video).item

    all_items = []
    for path in tqdm(args.inputs, desc="encode", unit="file", disable=len(args.inputs) < 2 or args.quiet):
        if is_video(path):
            frames, _ = read_frames(path, args.frames)
            if len(frames) < args.frames and not args.quiet:
                tqdm.write(f"{path}: the video has {len(frames)} frames; coding all of them (--frames {args.frames})")
            items = [code(frame, True) for frame in tqdm(frames, desc=Path(path).name, unit="frame", disable=args.quiet, leave=False)]
        else:
            items = [code(path, False)]
        if single_file:
            all_items += items
        else:
            write_bytes(out / (Path(path).stem + ".cotam"), pack(codec, items))
    if single_file:
        data = pack(codec, all_items)
        write_bytes(out, data)
        if not args.quiet:
            pixels = sum(i.orig_size[0] * i.orig_size[1] for i in all_items)
            kind = "frame(s)" if all_items[0].is_video_frame else "image(s)"
            print(f"{out}: {len(all_items)} {kind}, {len(data)} bytes, {len(data) * 8 / pixels:.4f} bpp of the coded picture(s)")
    elif not args.quiet:
        print(f"wrote {len(args.inputs)} .cotam files to {out}/")
    return 0


def register(sub: Any) -> None:
    """Add ``encode`` to the ``cotam`` subcommands."""
    p = sub.add_parser("encode", help="compress images or videos into .cotam bitstreams",
                       description="Compress images, or the frames a video MLLM samples from videos. With one input, or "
                                   "an output ending in .cotam, everything goes into one container; otherwise OUT is a "
                                   "folder with one .cotam per input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .cotam file or folder")
    p.add_argument("--quality", type=int, default=None, help="quality level 0 (fewest bits) .. 9 (best); default 6 "
                   "(with --model: the model's own default)")
    p.add_argument("--model", metavar="FOLDER_OR_HUB_ID", help="code exactly what this CoTAM model's tower reads (its "
                   "crop or AnyRes tiles, canvas, guidance, frame sampling and codec), bit for bit as its processor does")
    p.add_argument("--canvas", metavar="N|WxH", help="resize to this canvas first (multiples of 64, e.g. 384 for a "
                   "24x24 ViT grid); default: native resolution padded to multiples of 64")
    p.add_argument("--quality-map", metavar="JSON", help="per-region levels: a JSON grid (list of lists) expanded over the image")
    p.add_argument("--guidance", metavar="MODEL", help="shallow-attention guidance from this ViT: a hub id (e.g. "
                   "openai/clip-vit-large-patch14-336), a local folder, or dinov2-imgfocus (real weights, offline)")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"quality levels a guidance level moves (default {DEFAULT_GUIDANCE_STEP}, chosen by measurement)")
    p.add_argument("--guidance-rule", choices=["paper", "host"], default="paper",
                   help="paper: μ ± kσ on the ViT's first 3 layers' attention (default); host: the whole ViT's own "
                        "final-token error picks each region's level, the file no larger than the uniform one "
                        "(loads the whole ViT; one view; with --codec hevc each region's bits come from real x265 encodes)")
    p.add_argument("--guidance-spread", type=int, default=1, help="host rule: levels either side of --quality (default 1)")
    p.add_argument("--guidance-candidates", type=int, default=None,
                   help="host rule: candidate maps coded, decoded and judged by the ViT against the uniform file, the "
                        "best kept (0: the first map, unjudged; default: GuidanceConfig's)")
    p.add_argument("--tiles", metavar="ROWSxCOLS", help="hierarchical guidance over an AnyRes tile grid, e.g. 2x2")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from each video input (default 16)")
    p.add_argument("--codec", choices=["learned", "hevc", "av1"], default="learned",
                   help="base codec: the learned codec of --checkpoint (default), or a standard intra codec through "
                        "PyAV (hevc: x265, per-region quality as block QP offsets; av1: SVT-AV1, no per-region "
                        "quality); the standard ones need no checkpoint")
    p.add_argument("--entropy-arithmetic", choices=["fixed", "float"], default=None,
                   help="learned codec: how the entropy parameters are computed. fixed (the default for ELIC "
                        "codecs): on an exact integer grid, so any device decodes the file bit for bit (container "
                        "version 3); float: CompressAI's float32, a version-2 file that decoders older than the "
                        "fixed-point mode read, and that a decoder on another device may refuse "
                        "(SymbolMismatchError)")
    add_common(p)
    p.set_defaults(func=cmd_encode)
