"""Kodak RD of two learned base checkpoints (e.g. dcae-small vs elic-small trained for the same CPU time).

Codes every image of ``--images`` with each checkpoint (real ``.cotam`` files, native resolution) and with
JPEG and WebP (Pillow) in the same run, then prints the RD table and the BD-rates (PSNR, pchip) of every codec
against ``--anchor`` (default: the last checkpoint) and against JPEG. ``--held-out`` codes instead the training
run's held-out photos (every 25th of ../shared/data/train, center-cropped to 512 as the trainer validates).
A checkpoint that is not finalized (a resumable ``checkpoint-*/codec``) is finalized in memory first. Outputs
(CSV, Markdown, RD plot) go to ``--out``.

    python eval/dcae_vs_elic.py runs/cpu20-dcae-small/final runs/cpu20-elic-small/final --out eval/results/dcae_cpu20
    python eval/dcae_vs_elic.py A/codec B/codec --held-out --out eval/results/dcae_cpu20_heldout
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cotam_llava.codec.classical import PillowCodec  # noqa: E402
from cotam_llava.codec.loading import load_codec  # noqa: E402
from cotam_llava.codec.registry import LearnedCodec  # noqa: E402
from cotam_llava.evaluation.bench import bd_table, format_tables, run_bench, summarize, write_outputs  # noqa: E402

CLASSICAL_QUALITIES = {"jpeg": (10, 25, 50, 75, 90, 95), "webp": (2, 10, 25, 50, 75, 90, 95)}


class _Timed:
    """A codec without ``coding_stats``: the benchmark then skips its extra, untimed analysis pass."""

    def __init__(self, codec) -> None:
        self._codec = codec
        self.name = codec.name

    @property
    def default_qualities(self):
        return self._codec.default_qualities

    def encode(self, image, quality):
        return self._codec.encode(image, quality)

    def decode(self, data):
        return self._codec.decode(data)


def _held_out_crops(train_data: str, every_nth: int, folder: Path) -> list[Path]:
    """The trainer's validation crops (codec_trainer._center_crops, at most 512²) written as PNGs."""
    from PIL import Image

    from cotam_llava.training.codec_trainer import _center_crops
    from cotam_llava.training.data import split_files

    _, val = split_files([train_data], every_nth)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, crop in _center_crops(val, 512):
        path = folder / (Path(name).stem + ".png")
        Image.fromarray(crop).save(path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="learned codec checkpoint folders (any model_type)")
    parser.add_argument("--names", help="comma list of labels, one per checkpoint (default: model_type/preset + folder)")
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "kodak"), help="folder of PNGs")
    parser.add_argument("--held-out", action="store_true",
                        help="code the training run's held-out photos (every --val-every-nth of --train-data, center "
                             "crops of at most 512) instead of --images")
    parser.add_argument("--train-data", default=str(REPO.parent / "shared" / "data" / "train"))
    parser.add_argument("--val-every-nth", type=int, default=25)
    parser.add_argument("--max-images", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--qualities", default="0,3,6,9", help="levels of the learned codecs")
    parser.add_argument("--anchor", help="codec label the BD-rates are against (default: the last checkpoint)")
    parser.add_argument("--out", default=str(REPO / "eval" / "results" / "dcae_vs_elic"), help="output folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--coding-stats", action="store_true",
                        help="also measure the entropy-coding overhead of the learned codecs (one more encode each)")
    args = parser.parse_args(argv)

    if args.held_out:
        crops_dir = tempfile.mkdtemp(prefix="cotam-heldout-")  # training photos stay out of the repo
        images = _held_out_crops(args.train_data, args.val_every_nth, Path(crops_dir))
    else:
        images = sorted(Path(args.images).glob("*.png"))
    if args.max_images:
        images = images[: args.max_images]
    if not images:
        parser.error(f"no PNG images in {args.images}")
    qualities = [int(q) for q in args.qualities.split(",")]
    names = args.names.split(",") if args.names else []
    codecs = []
    for i, folder in enumerate(args.checkpoints):
        model = load_codec(folder)
        if not model.is_finalized:
            model.finalize()
        label = names[i] if i < len(names) else f"{model.config.preset}:{Path(folder).parent.name or Path(folder).name}"
        codec = LearnedCodec(model, name=label)
        codecs.append((codec if args.coding_stats else _Timed(codec), qualities))
    anchor = args.anchor or codecs[-1][0].name
    codecs += [(PillowCodec(name), q) for name, q in CLASSICAL_QUALITIES.items()]
    rows = run_bench(images, codecs, progress=not args.no_progress)
    summary = summarize(rows)
    bd = bd_table(summary, anchor=anchor)
    bd_jpeg = bd_table(summary, anchor="jpeg")
    source = 'held-out training photos' if args.held_out else Path(args.images).name
    title = f"{len(images)} images of {source}; BD-rate vs {anchor}"
    paths = write_outputs(rows, summary, bd, Path(args.out), title=title, anchor=anchor)
    (Path(args.out) / "bdrate_vs_jpeg.json").write_text(json.dumps(
        {k: {"bd_rate_pct": v.value, "note": v.note} for k, v in bd_jpeg.items()}, indent=2) + "\n")
    print(format_tables(summary, bd, anchor))
    print()
    print(format_tables([], bd_jpeg, "jpeg").split("\n", 2)[-1])
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
