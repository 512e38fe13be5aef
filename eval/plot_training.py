"""Training curves of a ``cotam train-codec`` or ``cotam train-adapter`` run folder (or a checkpoint folder that
keeps its logs), as one PNG.

* codec runs (``val_log.csv`` with ``psnr``): left, the validation RD curves (real bitstreams, bpp vs PSNR) at every
  validation step, coloured by step; middle, the training PSNR and bpp (moving average) against the step; right,
  where the run logged it (``val_bdrate.csv``), the held-out BD-rate against WebP per validation — the number exports
  are chosen by — with the training weights' (``val_bdrate_raw.csv``, runs with ``--ema_decay``) beside the average's.
* adapter runs (``val_log.csv`` with ``cos_adapter``): left, validation token cosine without and with the adapter per
  quality against the step; right, the training loss (moving average).

    python eval/plot_training.py runs/elic-small                      # → runs/elic-small/training.png
    python eval/plot_training.py checkpoints/elic-small -o card.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    import csv

    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_run(folder: Path, output: Path) -> Path:
    """Write the curves of the run in ``folder`` to ``output`` (PNG); returns ``output``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    val, train = _read_csv(folder / "val_log.csv"), _read_csv(folder / "train_log.csv")
    bdrate = folder / "val_bdrate.csv"
    codec_run = "psnr" in val
    if codec_run and bdrate.is_file():
        fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.2))
    else:
        (fig, (left, right)), third = plt.subplots(1, 2, figsize=(11, 4.2)), None
    steps = sorted(set(val["step"].astype(int)))
    window = max(1, len(train["step"]) // 40)
    if codec_run:
        # one curve per validation step, coloured by step on a colour bar (a legend of 100 steps would not fit)
        cmap = plt.get_cmap("viridis")
        norm = matplotlib.colors.Normalize(vmin=steps[0], vmax=max(steps[-1], steps[0] + 1))
        for s in steps:
            sel = val["step"] == s
            order = np.argsort(val["bpp"][sel])
            left.plot(val["bpp"][sel][order], val["psnr"][sel][order], "o-", ms=2.5, lw=1, color=cmap(norm(s)))
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=left, label="validation step")
        left.set(xlabel="bpp (real bitstreams)", ylabel="PSNR (dB)", title="validation: held-out photos")
        right.plot(train["step"][window - 1:], _smooth(train["psnr"], window), color="tab:blue")
        right.set(xlabel="step", ylabel="training PSNR (dB, moving average)", title="training")
        twin = right.twinx()
        twin.plot(train["step"][window - 1:], _smooth(train["bpp"], window), color="tab:orange")
        twin.set_ylabel("training bpp (estimated)", color="tab:orange")
        if third is not None:
            bd = _read_csv(bdrate)
            label = "weight average" if (folder / "val_bdrate_raw.csv").is_file() else "exported weights"
            third.plot(bd["step"], bd["bd_rate_vs_webp"], "o-", ms=3, label=label)
            if (folder / "val_bdrate_raw.csv").is_file():
                raw = _read_csv(folder / "val_bdrate_raw.csv")
                third.plot(raw["step"], raw["bd_rate_vs_webp"], "x--", ms=3, label="training weights")
            best = int(np.nanargmin(bd["bd_rate_vs_webp"]))
            third.annotate(f"best {bd['bd_rate_vs_webp'][best]:+.1f} %", (bd["step"][best], bd["bd_rate_vs_webp"][best]),
                           textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8)
            third.axhline(0, color="grey", lw=0.8)
            third.set(xlabel="step", ylabel="BD-rate vs WebP (%, PSNR; lower is better)", title="validation: held-out BD-rate")
            third.legend(fontsize=7)
            third.grid(alpha=0.3)
    elif "cos_adapter" in val:
        for q in sorted(set(val["quality"].astype(int))):
            sel = val["quality"] == q
            line, = left.plot(val["step"][sel], val["cos_adapter"][sel], "o-", ms=3, label=f"q{q} with adapter")
            left.plot(val["step"][sel], val["cos_base"][sel], "--", color=line.get_color(), label=f"q{q} without")
        left.set(xlabel="step", ylabel="final-token cosine to the original", title="validation: real bitstreams")
        right.plot(train["step"][window - 1:], _smooth(train["loss"], window))
        right.set(xlabel="step", ylabel="loss (moving average)", title="training")
        left.legend(fontsize=7)
    else:
        raise ValueError(f"{folder / 'val_log.csv'} is neither a codec nor an adapter validation log")
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.suptitle(folder.name)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="run folder (or checkpoint folder) with train_log.csv and val_log.csv")
    parser.add_argument("-o", "--output", help="PNG to write (default FOLDER/training.png)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        out = plot_run(folder, Path(args.output) if args.output else folder / "training.png")
    except (OSError, ValueError, KeyError) as exc:
        print(f"plot_training.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
