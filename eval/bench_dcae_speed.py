"""Encode / decode time of the two learned bases, DCAE and ELIC, at 768×512, and their ratios, in one run.

Each codec is built from its preset with fixed-seed random weights and finalized (speed does not depend on
training; rate does, so the bpp column of an untrained model means nothing), then codes the same photo at one
quality: encode = the whole edge path (canvas, g_a, entropy model, rANS, container), decode = the whole cloud
path (parse, bounded rANS decode, symbol check, g_s). The codecs take turns within every repetition, so a
machine whose load changes during the run slows them alike; the table gives medians and the ratios
DCAE / ELIC of the same size class, of the median and minimum wall times and of the median CPU time of this
process (all its threads: on a shared machine the CPU time is the steadier measure of the work done). Absolute
times are only comparable within one run (the paper's are GPU ones).

    python eval/bench_dcae_speed.py                      # dcae, elic, dcae-small, elic-small on kodim23
    python eval/bench_dcae_speed.py --runs 5 --threads 2 --json eval/results/dcae_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cotam_llava.codec.loading import codec_from_preset  # noqa: E402
from cotam_llava.codec.pipeline import compress_image, decode, pack  # noqa: E402

#: (DCAE preset, the ELIC preset of its size class) pairs whose time ratios the table reports.
PAIRS = (("dcae", "elic"), ("dcae-small", "elic-small"))


def _image(path: str | None, width: int, height: int) -> tuple[np.ndarray, str]:
    if path and Path(path).is_file():
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.BICUBIC)
            return np.asarray(img, dtype=np.uint8).copy(), Path(path).name
    rng = np.random.default_rng(0)  # no photo: smooth noise of the same size
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, 0), 8, 1), "synthetic"


def time_once(model, image: np.ndarray, quality: int) -> dict[str, float]:
    """Wall and CPU ms (this process, all threads) of encoding and decoding one image through the real edge and
    cloud paths, and the bytes of the file."""
    w0, c0 = time.perf_counter(), time.process_time()
    item, _ = compress_image(model, image, quality)
    data = pack(model, [item])
    w1, c1 = time.perf_counter(), time.process_time()
    decode(model, data)
    w2, c2 = time.perf_counter(), time.process_time()
    return {"encode": (w1 - w0) * 1e3, "decode": (w2 - w1) * 1e3, "encode_cpu": (c1 - c0) * 1e3,
            "decode_cpu": (c2 - c1) * 1e3, "bytes": len(data)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="dcae,elic,dcae-small,elic-small", help="comma list of codec presets")
    parser.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "kodak" / "kodim23.png"),
                        help="photo to code (resized to --size; synthetic when missing)")
    parser.add_argument("--size", default="768x512", help="WxH, multiples of 64 (default 768x512, Kodak)")
    parser.add_argument("--quality", type=int, default=5, help="quality level coded")
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions per codec (median), after one warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="torch device of the transforms (rANS runs on the CPU)")
    parser.add_argument("--json", help="also write the rows and ratios to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image, image_name = _image(args.image, width, height)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    models = {}
    for name in names:
        model = codec_from_preset(name, seed=0).eval().to(args.device)
        model.finalize()
        models[name] = model
    keys = ("encode", "decode", "encode_cpu", "decode_cpu", "bytes")
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in names}
    with torch.inference_mode():
        for name in names:  # warm-up: caches, numba, allocator
            time_once(models[name], image, args.quality)
        for _ in range(args.runs):
            for name in names:
                for key, value in time_once(models[name], image, args.quality).items():
                    times[name][key].append(value)
    rows = {}
    for name in names:
        t = times[name]
        rows[name] = {
            "preset": name,
            "kind": models[name].config.model_type,
            "params_m": models[name].num_parameters() / 1e6,
            **{f"{k}_ms": statistics.median(t[k]) for k in keys[:4]},
            **{f"{k}_ms_min": min(t[k]) for k in keys[:2]},
            **{f"{k}_ms_all": t[k] for k in keys[:4]},
        }
    ratios = [
        {"pair": f"{a} / {b}", **{k: rows[a][f"{k}_ms"] / rows[b][f"{k}_ms"] for k in keys[:4]},
         **{f"{k}_min": rows[a][f"{k}_ms_min"] / rows[b][f"{k}_ms_min"] for k in keys[:2]}}
        for a, b in PAIRS if a in rows and b in rows
    ]
    print(f"{image_name} at {width}×{height}, quality {args.quality}, {args.runs} runs (median) after a warm-up, "
          f"device {args.device}, {torch.get_num_threads()} torch threads; untrained fixed-seed weights\n")
    print("| codec | params (M) | encode ms (median / min) | decode ms (median / min) | encode CPU ms | decode CPU ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows.values():
        print(f"| {row['preset']} | {row['params_m']:.2f} | {row['encode_ms']:.0f} / {row['encode_ms_min']:.0f} "
              f"| {row['decode_ms']:.0f} / {row['decode_ms_min']:.0f} | {row['encode_cpu_ms']:.0f} | {row['decode_cpu_ms']:.0f} |")
    if ratios:
        print("\n| ratio | encode (median / min wall) | decode (median / min wall) | encode CPU | decode CPU |")
        print("|---|---:|---:|---:|---:|")
        for r in ratios:
            print(f"| {r['pair']} | {r['encode']:.2f}× / {r['encode_min']:.2f}× | {r['decode']:.2f}× / "
                  f"{r['decode_min']:.2f}× | {r['encode_cpu']:.2f}× | {r['decode_cpu']:.2f}× |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "image": image_name, "size": [width, height], "quality": args.quality, "runs": args.runs,
            "device": args.device, "threads": torch.get_num_threads(), "rows": list(rows.values()), "ratios": ratios,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
