"""The hevc / av1 base codecs against WebP, AVIF and the learned codec: PSNR BD-rate and speed, one run.

Every codec codes every image in the same process (``evaluation.bench.run_bench``: real file bytes, PSNR on
8-bit RGB, encode and decode ms per image); the BD-rates against WebP and against AVIF both come from that
one run, as do the speed ratios (median ms per image over a codec's levels, divided by AVIF's)::

    python eval/standard_bench.py ../shared/data/kodak --out eval/results/standard_kodak
    python eval/standard_bench.py ../shared/data/train --held-out 25 --out eval/results/standard_heldout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava.codec.registry import LearnedCodec, StandardImageCodec, get_codec  # noqa: E402
from cotam_llava.evaluation.bench import bd_table, format_tables, run_bench, summarize, write_outputs  # noqa: E402
from cotam_llava.imageio import list_images  # noqa: E402


def build_codecs(args):
    codecs = [(get_codec("webp"), None), (get_codec("avif"), None), (get_codec("hevc"), None), (get_codec("av1"), None)]
    if args.guidance:
        from cotam_llava.codec.guidance import GuidanceConfig, load_guidance
        from cotam_llava.codec.standard import StandardCodec

        guided = StandardImageCodec(StandardCodec("hevc"), name="hevc+guidance",
                                    guidance=load_guidance(args.guidance, GuidanceConfig()))
        codecs.append((guided, [int(q) for q in args.guided_qualities.split(",")]))
    if args.checkpoint:
        from cotam_llava.codec.model import CoTAMELIC

        codecs.append((LearnedCodec(CoTAMELIC.from_pretrained(args.checkpoint), name=Path(args.checkpoint).name),
                       [int(q) for q in args.learned_qualities.split(",")]))
    return [(codec, list(qs) if qs is not None else list(codec.default_qualities)) for codec, qs in codecs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", help="image folder (Kodak: testing only)")
    p.add_argument("--held-out", type=int, default=0, metavar="N",
                   help="use only every N-th photo under the folder (recursive): the training runs' held-out split")
    p.add_argument("--checkpoint", default="checkpoints/elic-small", help="learned codec for the speed comparison ('' for none)")
    p.add_argument("--learned-qualities", default="0,3,6,9")
    p.add_argument("--guidance", default="dinov2-imgfocus", help="guidance ViT for hevc+guidance ('' for none)")
    p.add_argument("--guided-qualities", default="1,5,9")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.held_out:
        from cotam_llava.training.data import split_files

        images = split_files([args.images], args.held_out)[1]
        label = f"{len(images)} held-out photos (every {args.held_out}-th of {args.images})"
    else:
        images = list_images(args.images)
        label = f"{Path(args.images).name}: {len(images)} images"
    images = images[: args.limit or None]
    codecs = build_codecs(args)
    rows = run_bench(images, codecs)
    summary = summarize(rows)
    out = Path(args.out)
    bd_webp, bd_avif = bd_table(summary, "webp"), bd_table(summary, "avif")
    write_outputs(rows, summary, bd_webp, out, title=label, anchor="webp")
    speed = {}
    for codec, _ in codecs:
        mine = [r for r in rows if r.codec == codec.name]
        speed[codec.name] = {"encode_ms": statistics.median(r.encode_ms for r in mine),
                             "decode_ms": statistics.median(r.decode_ms for r in mine)}
    for name in speed:
        speed[name]["encode_vs_avif"] = speed[name]["encode_ms"] / speed["avif"]["encode_ms"]
        speed[name]["decode_vs_avif"] = speed[name]["decode_ms"] / speed["avif"]["decode_ms"]
    lines = ["", "| codec | BD-rate vs avif (PSNR, pchip) | note |", "|---|---:|---|"]
    lines += [f"| {name} | {res.value:+.2f}% | {res.note} |" for name, res in bd_avif.items()]
    lines += ["", "Speed, one run (median ms per image over the codec's levels; ratios to AVIF through Pillow):", "",
              "| codec | encode ms | decode ms | encode / AVIF | decode / AVIF |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s['encode_ms']:.1f} | {s['decode_ms']:.1f} | {s['encode_vs_avif']:.2f} | {s['decode_vs_avif']:.2f} |"
              for n, s in speed.items()]
    with (out / "bench.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({
        "images": [str(i) for i in images],
        "bd_rate_vs_webp": {k: v.value for k, v in bd_webp.items()},
        "bd_rate_vs_avif": {k: v.value for k, v in bd_avif.items()},
        "speed": speed,
    }, indent=2) + "\n")
    print(format_tables(summary, bd_webp, "webp") + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
