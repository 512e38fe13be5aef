"""Preset table: parameters, checkpoint size, encode/decode ms, entropy-coding overhead, header bits.

For each codec preset (untrained weights unless --checkpoint is given: speed and
format overheads do not depend on training, rate does), codes one 768×512 Kodak
photo several times at each requested quality and prints a Markdown table of
medians. Timings are CPU wall-clock on this machine; compare presets only within
one run.

    python eval/bench_codec.py                       # elic-small and elic on kodim23
    python eval/bench_codec.py --presets tiny --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cotam_llava.codec.container import serialize  # noqa: E402
from cotam_llava.codec.model import CoTAMELIC  # noqa: E402
from cotam_llava.codec.pipeline import compress_image, container_of, decode  # noqa: E402
from cotam_llava.imageio import to_uint8_array  # noqa: E402


def bench_preset(model: CoTAMELIC, image, qualities: Sequence[int], runs: int) -> list[dict]:
    rows = []
    h, w = image.shape[:2]
    for q in qualities:
        enc, dec = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            item, _ = compress_image(model, image, q)
            data = serialize(container := container_of(model, [item]))
            t1 = time.perf_counter()
            decode(model, data)
            t2 = time.perf_counter()
            enc.append((t1 - t0) * 1e3)
            dec.append((t2 - t1) * 1e3)
        _, latent = compress_image(model, image, q, estimate=True)  # untimed: the model's estimate
        est = float(sum((-lk.clamp_min(1e-9).log2()).sum() for lk in latent.likelihoods.values()))
        rows.append({
            "quality": q,
            "bpp": len(data) * 8 / (w * h),
            "encode_ms": statistics.median(enc),
            "decode_ms": statistics.median(dec),
            "ec_overhead_pct": 100 * (8 * item.payload_bytes / est - 1),
            "header_bits": 8 * (container.file_header_bytes + item.header_bytes),
        })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="elic-small,elic", help="comma list of presets (default elic-small,elic)")
    parser.add_argument("--checkpoint", help="measure this checkpoint instead of untrained presets")
    parser.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "kodak" / "kodim23.png"))
    parser.add_argument("--qualities", default="0,5,9")
    parser.add_argument("--runs", type=int, default=5, help="repetitions per point (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = to_uint8_array(args.image)
    qualities = [int(q) for q in args.qualities.split(",")]
    models = []
    if args.checkpoint:
        models.append((Path(args.checkpoint).name, CoTAMELIC.from_pretrained(args.checkpoint)))
    else:
        for name in args.presets.split(","):
            model = CoTAMELIC.from_preset(name, seed=0).eval()
            model.finalize()
            models.append((name + " (untrained)", model))
    out = []
    print(f"image {Path(args.image).name} {image.shape[1]}x{image.shape[0]}, {args.runs} runs, "
          f"{torch.get_num_threads()} torch threads\n")
    print("| codec | params (M) | checkpoint MiB | quality | bpp | encode ms | decode ms | EC overhead % | header bits |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, model in models:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            mib = (Path(tmp) / "model.safetensors").stat().st_size / 2**20
        for row in bench_preset(model, image, qualities, args.runs):
            row.update(codec=label, params_m=model.num_parameters() / 1e6, checkpoint_mib=mib)
            out.append(row)
            print(f"| {label} | {row['params_m']:.2f} | {mib:.1f} | {row['quality']} | {row['bpp']:.3f} | "
                  f"{row['encode_ms']:.0f} | {row['decode_ms']:.0f} | {row['ec_overhead_pct']:+.2f} | {row['header_bits']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
