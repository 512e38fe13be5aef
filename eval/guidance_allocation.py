"""Guidance that pays? Quality-map rules at the base level's rate, measured with real files on the real DINOv2-S.

For each photo (its centre square at the tower's 256² canvas) and base level q, every rule makes an 8 × 8 quality
map, the picture is coded to a real ``.cotam`` file with it, decoded, and the host (DINOv2-S, through the tower
with the adapter off) gives final tokens; E = 1 − mean token cosine against the original's tokens.

Rules (``--rules``, comma-separated):

- ``uniform``: no map (the base codec).
- ``paper``: the paper's μ ± kσ on shallow attention (K = 3 layers, k = 0.75, 3 levels, ``--step``).
- ``wmse:G``: rate-constrained, the attention map as weights (γ = G) on each cell's pixel MSE.
- ``host:S``: rate-constrained, the host's own token error cell by cell, levels q − S … q + S (default S: --spread;
  ``cotam_llava.codec.guidance.HostGuidance``; needs the whole host at the edge).
- ``hostv:N``: as ``host`` (levels q ± --spread), the maps judged on real files (``GuidanceConfig(verify=True,
  candidates=N)``): N candidate maps with growing penalties on changed cells, each decoded and judged by the host
  against the uniform file; the least error wins, uniform on ties. Shares ``host``'s cell probe (computed once).
- ``hostgrad:S``: as ``host:S`` with the token error to first order (one host forward and backward pass).
- ``random``: rate-constrained, random weights (a control: what any reshuffling of bits does).

Rate-constrained rules choose among the levels q − s … q + s (``--spread`` s, one level apart) so that the
picture's estimated bits (entropy model, plus the map's own bits) stay at or under the uniform file's, then check the
real file and shrink the budget while it is larger (``allocation.rate_matched_map``; else uniform).
Reports mean Δbits (%) and ΔE per rule and q against uniform, and the BD-rate of each rule's (bpp, cosine) curve
against uniform's over the qualities. Choose on the ``choose`` photos; report on ``report`` and Kodak:

    python eval/guidance_allocation.py --images /tmp/photo-cache/photos/choose --out eval/results/allocation_choose
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID = 8


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--images", type=Path, required=True, help="folder of photos")
    parser.add_argument("--limit", type=int, default=0, help="first N photos (0: all)")
    parser.add_argument("--qualities", default="0,2,4,6,8", help="base levels (default 0,2,4,6,8, as the adapter study)")
    parser.add_argument("--rules", default="uniform,paper,wmse:1,random,host:1,host:2", help="rules to compare (default uniform,paper,wmse:1,random,host:1,host:2)")
    parser.add_argument("--spread", type=int, default=1, help="rate-constrained rules pick from q−s…q+s (default 1)")
    parser.add_argument("--step", type=int, default=1, help="the paper rule's step (default 1)")
    parser.add_argument("--adapter", default=str(REPO / "checkpoints" / "adapter-dinov2"),
                        help="the exported adapter whose tower (host, processor, codec) is used (default: shipped)")
    parser.add_argument("--out", type=Path, default=None, help="folder for allocation.md / .json / rows.csv")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from cotam_llava.codec.guidance import GuidanceConfig, HostGuidance, levels_to_quality_map, pool_map, quantize_levels
    from cotam_llava.codec.guidance.allocation import (host_distortion, host_gradient_distortion, rate_matched_map,
                                                       weighted_mse_distortion)
    from cotam_llava.codec.pipeline import _to_canvas, encode_item, pack
    from cotam_llava.errors import CoTAMError
    from cotam_llava.evaluation.bdrate import bd_rate
    from cotam_llava.evaluation.proxies import token_fidelity
    from cotam_llava.imageio import list_images, to_pil
    from cotam_llava.training.adapter_trainer import load_adapter_tower
    from cotam_llava.vision.edge import guidance_for
    from cotam_llava.vision.edge import center_square

    try:
        qualities = [int(v) for v in args.qualities.split(",")]
        rules = [r.strip() for r in args.rules.split(",") if r.strip()]
        files = list_images(args.images)[: args.limit or None]
        tower = load_adapter_tower(args.adapter)
    except (ValueError, CoTAMError) as exc:
        parser.error(str(exc))
    codec = tower.codec
    Q = codec.config.num_qualities
    guidance = guidance_for(tower)
    canvas = tower.cotam_config.canvas_size
    rng = np.random.default_rng(0)

    proc = tower.image_processor
    host = HostGuidance(tower.encoder, GuidanceConfig(allocation="host", image_size=tower.input_side,
                                                      image_mean=list(proc.image_mean), image_std=list(proc.image_std)))

    rows = []
    host_tables: dict = {}  # (photo, q, spread) → the host's distortion table: host rules share one cell probe
    bar = tqdm(total=len(files) * len(qualities) * len(rules), desc="allocation", unit="file", disable=args.quiet)
    with torch.no_grad(), tower.variant(adapter=False):
        for path in files:
            picture = center_square(to_pil(path))
            x, *_ = _to_canvas(picture, canvas)
            pv = tower.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
            reference = tower.encoder(pixel_values=pv).last_hidden_state
            importance = pool_map(guidance([picture])[0], GRID)
            for q in qualities:
                for rule in rules:
                    name, _, arg = rule.partition(":")
                    qmap = None
                    if name == "paper":
                        qmap = levels_to_quality_map(quantize_levels(importance, 3, 0.75), q, args.step, 3, Q)
                    elif name in ("wmse", "host", "hostv", "hostgrad", "random"):
                        spread = int(arg) if name in ("host", "hostgrad") and arg else args.spread
                        judge = None
                        cfg = GuidanceConfig(grid=GRID, spread=spread)
                        if name == "hostv":
                            cfg = GuidanceConfig(grid=GRID, spread=spread, verify=True, candidates=int(arg or 1))
                            with torch.no_grad():
                                judge = host.judge(host.token_error(host.tokens(x)))
                        if name == "wmse":
                            def dist(probe, base, gamma=float(arg or 1)):
                                return weighted_mse_distortion(probe, importance, gamma)
                        elif name == "random":
                            def dist(probe, base, weights=rng.random(GRID * GRID)):
                                return weighted_mse_distortion(probe, weights, 1.0)
                        elif name == "hostgrad":
                            def dist(probe, base):
                                with torch.no_grad():
                                    ref = host.tokens(x)
                                return host_gradient_distortion(probe, base, host.token_error(ref))
                        else:
                            def dist(probe, base, key=(path, q, spread)):
                                if key not in host_tables:
                                    with torch.no_grad():
                                        ref = host.tokens(x)
                                    host_tables[key] = host_distortion(probe, base, host.token_error(ref))
                                return host_tables[key]
                        qmap, _, _ = rate_matched_map(codec, x, q, cfg, dist, judge=judge)
                    elif name != "uniform":
                        parser.error(f"unknown rule {rule!r}")
                    data = pack(codec, [encode_item(codec, picture, q, quality_map=qmap, canvas=canvas).item])
                    tokens = tower(data).last_hidden_state
                    cos, mse = token_fidelity(reference, tokens)
                    g = qmap.grid if qmap is not None else np.full((GRID, GRID), q)
                    rows.append({"image": path.name, "quality": q, "rule": rule, "bytes": len(data),
                                 "bpp": len(data) * 8 / (picture.width * picture.height), "cosine": float(cos.mean()),
                                 "mse": float(mse.mean()), "up": int((g > q).sum()), "down": int((g < q).sum())})
                    bar.update()
    bar.close()

    def mean(rule: str, q: int, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["rule"] == rule and r["quality"] == q]))

    def rel_bits(rule: str, q: int) -> float:
        pairs = [(r["bytes"], u["bytes"]) for r in rows for u in rows if r["rule"] == rule and u["rule"] == "uniform"
                 and r["quality"] == q == u["quality"] and r["image"] == u["image"]]
        return 100 * float(np.mean([a / b - 1 for a, b in pairs]))

    lines = [f"# Quality-map rules at the base rate: {len(files)} photos of {args.images}, codec "
             f"{codec.codec_id.hex()}, host DINOv2-S (adapter off), {canvas}² canvas, {GRID}×{GRID} cells, "
             f"rate-constrained rules over q ± {args.spread}", "",
             "E = 1 − mean final-token cosine. Δ against the uniform file at the same q; BD-rate of the mean (bpp, "
             "cosine) curve against uniform's (negative: fewer bits for the same fidelity).", "",
             "| rule | " + " | ".join(f"q{q} Δbits / ΔE / up·down" for q in qualities) + " | BD-rate (cosine) | BD-rate (−10·log10 MSE) |",
             "|---|" + "---:|" * (len(qualities) + 2)]
    summary = {}
    for rule in rules:
        cells = []
        for q in qualities:
            dE = -(mean(rule, q, "cosine") - mean("uniform", q, "cosine")) if "uniform" in rules else float("nan")
            cells.append(f"{rel_bits(rule, q):+.1f} % / {dE:+.5f} / {mean(rule, q, 'up'):.1f}·{mean(rule, q, 'down'):.1f}"
                         if "uniform" in rules else "")
        bd = {}
        if "uniform" in rules:
            for metric, f in (("cosine", lambda v: v), ("mse_db", lambda v: -10 * np.log10(v))):
                key = "cosine" if metric == "cosine" else "mse"
                ur = [mean("uniform", q, "bpp") for q in qualities]
                uq = [f(mean("uniform", q, key)) for q in qualities]
                tr = [mean(rule, q, "bpp") for q in qualities]
                tq = [f(mean(rule, q, key)) for q in qualities]
                bd[metric] = bd_rate(ur, uq, tr, tq).value if rule != "uniform" else 0.0
        summary[rule] = bd
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {bd.get('cosine', float('nan')):+.2f} % | "
                     f"{bd.get('mse_db', float('nan')):+.2f} % |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        import csv

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "allocation.md").write_text(report + "\n")
        (args.out / "allocation.json").write_text(json.dumps({"bd_rate": summary, "rows": rows}, indent=1) + "\n")
        with (args.out / "rows.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
