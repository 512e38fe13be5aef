"""Held-out RD of codec training runs against their training time: which base learns more per CPU hour.

For each run folder, every ``--every``-th resumable checkpoint (``checkpoint-*/codec``, finalized in memory) is
validated exactly as ``train-codec`` validates: real ``.cotam`` files of the held-out photos' center crops
(every ``--val-every-nth`` of ``--train-data``, at most ``--val-max-side``²) at ``--qualities``, mean bpp and PSNR,
and the BD-rate (PSNR, pchip) against WebP on the same crops. The training time of a step is the sum of the run's
logged seconds per step up to it (``train_log.csv``; for runs given one thread each on their own core, wall time
is CPU time). Writes ``curve.csv`` (one row per run, step and level), ``curve.json`` and ``curve.png`` (BD-rate
against WebP and PSNR at the lowest and highest level, against training minutes) to ``--out``.

    python eval/codec_cpu_curve.py runs/cpu50-elic-small runs/cpu50-dcae-small --out eval/results/dcae/cpu50_curve
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm.auto import tqdm  # noqa: E402

from cotam_llava.codec.loading import load_codec  # noqa: E402
from cotam_llava.training.codec_trainer import (  # noqa: E402
    _summarize_val, held_out_bd_rate, validate_codec, webp_anchor)
from cotam_llava.training.data import split_files  # noqa: E402


def training_seconds(run: Path) -> dict[int, float]:
    """Step → seconds of training up to it, from ``train_log.csv`` (each row: the mean s/step since the last row)."""
    path = run / "train_log.csv"
    if not path.is_file():
        raise SystemExit(f"error: {run} has no train_log.csv (not a train-codec run folder)")
    seconds, total, last = {}, 0.0, 0
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            total += float(row["sec_per_step"]) * (step - last)
            seconds[step], last = total, step
    return seconds


def checkpoints(run: Path, every: int) -> list[tuple[int, Path]]:
    """(step, codec folder) of the run's resumable checkpoints, every ``every``-th, always with the last one."""
    found = sorted((int(p.name.split("-")[1]), p / "codec") for p in run.glob("checkpoint-*") if (p / "codec").is_dir())
    if not found:
        raise SystemExit(f"error: {run} has no checkpoint-*/codec folders")
    kept = found[::every]
    return kept if kept[-1] == found[-1] else kept + [found[-1]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="train-codec run folders")
    parser.add_argument("--names", help="comma list of labels, one per run (default: the folder names)")
    parser.add_argument("--every", type=int, default=1, help="validate every n-th checkpoint (the last always)")
    parser.add_argument("--qualities", default="0,2,4,6,9", help="levels validated")
    parser.add_argument("--train-data", default=str(REPO.parent / "shared" / "data" / "train"))
    parser.add_argument("--val-every-nth", type=int, default=25)
    parser.add_argument("--val-max-side", type=int, default=512)
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be ≥ 1")
    runs = [Path(r) for r in args.runs]
    names = args.names.split(",") if args.names else [r.name for r in runs]
    if len(names) != len(runs):
        parser.error(f"--names has {len(names)} labels for {len(runs)} runs")
    qualities = [int(q) for q in args.qualities.split(",")]

    timing = {run: training_seconds(run) for run in runs}  # refuses a folder that is not a run before any work
    plan = [(name, run, step, folder, timing[run]) for name, run in zip(names, runs)
            for step, folder in checkpoints(run, args.every)]
    _, val_files = split_files([args.train_data], args.val_every_nth)
    anchor = webp_anchor(val_files, args.val_max_side)
    records = []
    for name, run, step, folder, seconds in tqdm(plan, desc="checkpoints", unit="ckpt"):
        model = load_codec(folder)
        model.finalize()
        summary = _summarize_val(validate_codec(model, val_files, qualities, args.val_max_side), qualities)
        bd = held_out_bd_rate(summary, anchor)
        minutes = seconds.get(step, max((s for k, s in seconds.items() if k <= step), default=0.0)) / 60
        records.append({"run": name, "step": step, "train_minutes": round(minutes, 2),
                        "bd_rate_vs_webp": None if math.isnan(bd) else round(bd, 3),
                        "levels": {str(q): {"bpp": round(b, 5), "psnr": round(p, 3)} for q, (b, p) in summary.items()}})
        tqdm.write(f"{name} step {step} ({minutes:.1f} min): BD-rate vs WebP "
                   f"{'undefined' if math.isnan(bd) else f'{bd:+.1f} %'}; "
                   + ", ".join(f"q{q} {b:.3f} bpp {p:.2f} dB" for q, (b, p) in summary.items()))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "curve.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "train_minutes", "bd_rate_vs_webp", "quality", "bpp", "psnr"])
        for r in records:
            for q, v in r["levels"].items():
                writer.writerow([r["run"], r["step"], r["train_minutes"], r["bd_rate_vs_webp"], q, v["bpp"], v["psnr"]])
    (out / "curve.json").write_text(json.dumps({"held_out_images": len(val_files), "webp_anchor": anchor,
                                                "records": records}, indent=1) + "\n")
    _plot(records, qualities, out / "curve.png")
    print(f"written: {out / 'curve.csv'}, {out / 'curve.json'}, {out / 'curve.png'}")
    return 0


def _plot(records: list[dict], qualities: list[int], path: Path) -> None:
    """BD-rate against WebP, and PSNR and bpp at the lowest and highest level, against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in dict.fromkeys(r["run"] for r in records):
        rs = [r for r in records if r["run"] == name]
        t = [r["train_minutes"] for r in rs]
        axes[0].plot(t, [math.nan if r["bd_rate_vs_webp"] is None else r["bd_rate_vs_webp"] for r in rs], "o-", label=name)
        for q, style in ((qualities[0], "--"), (qualities[-1], "-")):
            for ax, key in ((axes[1], "psnr"), (axes[2], "bpp")):
                ax.plot(t, [r["levels"][str(q)][key] for r in rs], style, marker=".", label=f"{name} q{q}")
    if all(r["bd_rate_vs_webp"] is None for r in records):
        axes[0].text(0.5, 0.5, "undefined at every checkpoint:\nno PSNR overlap with WebP's curve,\nor PSNR flat across levels",
                     ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set(xlabel="training minutes", ylabel="held-out BD-rate vs WebP (%)", title="held-out BD-rate (lower is better)")
    axes[1].set(xlabel="training minutes", ylabel="held-out PSNR (dB)", title="PSNR at the lowest and highest level")
    axes[2].set(xlabel="training minutes", ylabel="held-out bpp (real files)", title="rate at the lowest and highest level")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
