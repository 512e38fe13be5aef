"""``cotam decode`` and ``cotam info``: a .cotam file back to images, and where its bits go."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from ._common import add_common, check_output, load_codec, make_folder, read_bytes


def cmd_decode(args: argparse.Namespace) -> int:
    from ..codec.container import ParseLimits, is_learned_kind, parse

    out = check_output(args.output)
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
    data = read_bytes(args.input)
    limits = ParseLimits(max_pixels=args.max_pixels) if args.max_pixels else None
    container = parse(data, limits)
    if is_learned_kind(container.kind):  # the header says which decoder: a checkpoint only for the learned kind
        from ..codec.pipeline import decode_container

        images = decode_container(load_codec(args.checkpoint), container)
    else:
        from ..codec.standard import decode_container as decode_standard

        images = decode_standard(container)
    make_folder(out.parent)
    targets = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i:04d}{out.suffix or '.png'}") for i in range(len(images))]
    for image, target in zip(images, targets):
        try:
            image.to_pil().save(target)
        except (OSError, ValueError) as exc:  # ValueError: an extension PIL cannot write
            raise ConfigError(f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not args.quiet:
        print(f"decoded {len(images)} image(s) → {targets[0]}{' …' if len(targets) > 1 else ''}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..codec.container import parse

    data = read_bytes(args.input)
    container = parse(data)
    items = []
    for i, item in enumerate(container.items):
        pixels = item.orig_size[0] * item.orig_size[1]
        items.append({
            "index": i,
            "kind": "video frame" if item.is_video_frame else "image",
            "original_size": list(item.orig_size),
            "canvas_size": list(item.canvas_size),
            "resize_mode": item.resize_mode.name.lower(),
            "base_quality": item.base_quality,
            "quality_map": item.quality_map.grid.tolist() if item.quality_map is not None else None,
            "streams": len(item.streams),
            "header_bits": 8 * item.header_bytes,
            "map_bits": item.map_bits,
            "map_cell_bits": item.quality_map.cell_bits() if item.quality_map is not None else 0,
            "payload_bits": 8 * item.payload_bytes,
            "bpp_coded": 8 * (item.header_bytes + item.payload_bytes) / pixels,
            "symbol_crc": f"{item.symbol_crc:08x}",
        })
    report = {
        "file": str(args.input),
        "bytes": len(data),
        "codec_kind": container.kind.name.lower(),
        "format_version": container.version,
        "codec_id": container.codec_id.hex(),
        "file_header_bits": 8 * container.file_header_bytes,
        "items": items,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.input}: {len(data)} bytes, format v{container.version}, {report['codec_kind']} codec {report['codec_id']}, "
          f"{len(items)} item(s), "
          f"file header {report['file_header_bits']} bits")
    for it in items:
        w, h = it["original_size"]
        cw, ch = it["canvas_size"]
        qm = "uniform" if it["quality_map"] is None else f"{len(it['quality_map'])}x{len(it['quality_map'][0])} map ({it['map_bits']} bits, cells {it['map_cell_bits']})"
        print(f"  [{it['index']}] {it['kind']} {w}x{h} → canvas {cw}x{ch} ({it['resize_mode']}), q={it['base_quality']} {qm}; "
              f"header {it['header_bits']} bits, payload {it['payload_bits']} bits in {it['streams']} streams, {it['bpp_coded']:.4f} bpp of the coded picture")
    return 0


def register(sub: Any) -> None:
    """Add ``decode`` and ``info`` to the ``cotam`` subcommands."""
    p = sub.add_parser("decode", help="decode a .cotam bitstream to images",
                       description="Decode a .cotam file. Its header says which base codec made it: the learned "
                                   "codec needs the --checkpoint that encoded it; hevc / av1 files need none.")
    p.add_argument("input", metavar="IN.cotam")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="output image; several images are written as OUT_0000.png, OUT_0001.png, ...")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this (default 4096*4096)")
    add_common(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="show a .cotam file's header fields and where its bits go")
    p.add_argument("input", metavar="IN.cotam")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
