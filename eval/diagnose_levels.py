"""Where does a codec's quality stop? Per-level diagnosis on held-out photos (issue 18, item 1b).

For every quality level of a checkpoint, on centre crops of the held-out training photos (every 25th photo of
``../shared/data/train``, never Kodak), it prints:

* ``bpp`` / ``PSNR``: the eval-mode pass (ŷ rounded, rate from the entropy models' likelihoods, which match real
  bitstreams within a few per cent, docs/training.md);
* ``PSNR ŷ=y``: the same transforms with the latent **not quantised** (g_s of the gained, un-rounded latent): the
  transforms' own ceiling at that level. When it sits close to the rounded PSNR, finer quantisation cannot help and
  the transforms cap the quality;
* ``PSNR y+noise``: the training-mode noise proxy, to compare with the rounded pass;
* ``gain``: the geometric mean of the latent gain vector (quantisation step 1/gain in latent units);
* ``D/λ`` and ``loss share``: each level's distortion term of the training loss (MSE/λ_q + bpp) and its share of
  the sum over levels when levels are sampled uniformly — how much of the gradient each level gets.

    python eval/diagnose_levels.py --checkpoint checkpoints/elic-small-next --out eval/results/levels_next.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava.codec.model import CoTAMELIC  # noqa: E402
from cotam_llava.training.codec_trainer import _center_crops  # noqa: E402
from cotam_llava.training.data import split_files  # noqa: E402


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.clamp(0, 1) - b).pow(2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


@torch.no_grad()
def diagnose(model: CoTAMELIC, crops: list, qualities: list[int]) -> list[dict]:
    model.eval()
    rows = []
    for q in tqdm(qualities, desc="levels", unit="level"):
        acc = {"bpp": 0.0, "mse": 0.0, "psnr": 0.0, "psnr_unquantized": 0.0, "psnr_noise": 0.0}
        for _, crop in crops:
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
            qt = model.quality_tensor(q, 1, (x.shape[-2] // 16, x.shape[-1] // 16))
            y = model.analysis(x, qt)
            out = model.latent_codec(y)  # eval mode: ŷ rounded
            x_hat, _ = model.synthesis(out["y_hat"], qt)
            bits = sum(float(-(lk.clamp_min(1e-9).log2()).sum()) for lk in out["likelihoods"].values())
            x_cont, _ = model.synthesis(y, qt)
            x_noise, _ = model.synthesis(y + torch.empty_like(y).uniform_(-0.5, 0.5), qt)
            mse = float((x_hat.clamp(0, 1) - x).pow(2).mean())
            acc["bpp"] += bits / (x.shape[-2] * x.shape[-1])
            acc["mse"] += mse
            acc["psnr"] += _psnr(x_hat, x)
            acc["psnr_unquantized"] += _psnr(x_cont, x)
            acc["psnr_noise"] += _psnr(x_noise, x)
        row = {k: v / len(crops) for k, v in acc.items()}
        lam = model.config.lambda_for_quality(q)
        row.update(quality=q, lam=lam, d_over_lambda=row["mse"] / lam,
                   gain=float(model.gain_y.gain[q].log().mean().exp()))
        rows.append(row)
    total = sum(r["d_over_lambda"] + r["bpp"] for r in rows)
    for r in rows:
        r["loss_share"] = (r["d_over_lambda"] + r["bpp"]) / total
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/elic-small", help="codec folder (config.json + model.safetensors)")
    parser.add_argument("--data", default="../shared/data/train", help="training photos; every --val_every_nth is held out")
    parser.add_argument("--val_every_nth", type=int, default=25)
    parser.add_argument("--max_side", type=int, default=512, help="centre crops of at most this side (as validation)")
    parser.add_argument("--qualities", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if "kodak" in str(args.data).lower():
        parser.error("Kodak is the test set: diagnose on held-out training photos")
    torch.manual_seed(0)
    model = CoTAMELIC.from_pretrained(args.checkpoint)
    _, val = split_files([args.data], args.val_every_nth)
    crops = _center_crops(val, args.max_side)
    rows = diagnose(model, crops, args.qualities)
    print(f"{args.checkpoint}: {len(crops)} held-out crops ≤ {args.max_side}²")
    print("| q | λ | gain | bpp | PSNR (ŷ rounded) | PSNR ŷ=y (no quantisation) | PSNR y+noise | D/λ | loss share |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['quality']} | {r['lam']:g} | {r['gain']:.2f} | {r['bpp']:.3f} | {r['psnr']:.2f} | "
              f"{r['psnr_unquantized']:.2f} | {r['psnr_noise']:.2f} | {r['d_over_lambda']:.2f} | {100 * r['loss_share']:.1f} % |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "crops": len(crops), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
