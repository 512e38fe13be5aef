"""Token fidelity vs bpp of CoTAM's parts on the real DINOv2-S: base codec, + guidance, + adapter, full CoTAM.

    python eval/adapter_study.py --adapter checkpoints/adapter-dinov2          # Kodak, 5 qualities, + JPEG, WebP
    python eval/adapter_study.py --adapter DIR --limit 4 --qualities 1,5 --classical none --out /tmp/study
    python eval/adapter_study.py --adapter DIR --images ../shared/data/train --held-out 25 --classical none \
        --out /tmp/heldout      # the photos train-adapter validates on: choose settings without touching Kodak

Reads an adapter exported by ``cotam train-adapter`` (``adapter.safetensors`` + ``adapter_config.json``, which
names the encoder and the codec it was trained with), codes the centre square of each photo with real
bitstreams (and, as references, with classical codecs on the same canvas picture), and writes per-image and
per-point CSVs, a BD-rate table of every variant against the base codec and each classical codec (pchip, on
cosine and on −10·log10 MSE), Markdown, JSON and an RD plot (``adapter_fidelity*``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _classical(text: str) -> list[str]:
    from cotam_llava.codec.classical import CLASSICAL_FORMATS

    names = [] if text.strip().lower() == "none" else [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in CLASSICAL_FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown classical codecs {unknown}; choose from {', '.join(CLASSICAL_FORMATS)}")
    return names


def _percent_qualities(text: str) -> list[int]:
    values = _ints(text)
    if not values or any(not 0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"classical qualities are integers in [0, 100], got {text!r}")
    return values


def _standard(text: str) -> list[str]:
    names = [n for n in text.split(",") if n and n != "none"]
    unknown = [n for n in names if n not in ("hevc", "av1", "hevc+guidance")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown standard codecs {unknown}; choose from hevc, av1, hevc+guidance")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adapter_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", required=True, help="exported adapter folder (adapter.safetensors + adapter_config.json)")
    p.add_argument("--codec", help="codec checkpoint, or hevc / av1 (default: the one named in adapter_config.json)")
    p.add_argument("--images", default=str(KODAK), help="folder of photos (default ../shared/data/kodak)")
    p.add_argument("--limit", type=int, default=0, help="use the first N photos (0: all)")
    p.add_argument("--held-out", type=int, default=0, metavar="N",
                   help="search --images recursively and use every N-th photo: the ones `cotam train-adapter "
                        "--val_every_nth N` holds out, for choosing settings without touching Kodak (0: all photos)")
    p.add_argument("--qualities", type=_ints, default=[0, 2, 4, 6, 8], help="base quality levels (default 0,2,4,6,8)")
    p.add_argument("--classical", type=_classical, default=["jpeg", "webp"],
                   help="classical references coded on the same canvas picture, comma-separated "
                        "(jpeg, webp, avif, jxl; 'none': skip) (default jpeg,webp)")
    p.add_argument("--classical-qualities", type=_percent_qualities, default=[5, 10, 20, 35, 50, 70, 90],
                   help="their qualities, 0-100 (default 5,10,20,35,50,70,90)")
    p.add_argument("--standard", type=_standard, default=[],
                   help="standard base codecs as references on the same canvas picture, comma-separated (hevc, av1, "
                        "hevc+guidance: the guidance map as block QP offsets; default none)")
    p.add_argument("--standard-qualities", type=_ints, default=list(range(10)), help="their levels (default 0..9)")
    p.add_argument("--guidance-rule", choices=("paper", "host", "host+adapter"), default="paper",
                   help="how the guided variants make their maps: the paper's μ ± kσ on shallow attention, or the "
                        "host encoder's own token error at the base level's rate, or (host+adapter) the error of the "
                        "tokens the cloud makes, the adapter included (default paper)")
    p.add_argument("--spread", type=int, default=1, help="host rule: levels either side of the base (default 1)")
    p.add_argument("--candidates", type=int, default=None,
                   help="host rule: candidate maps judged on real files by the host against the uniform file (0: the "
                        "first map, unjudged, the rule before 2026-12-07; default: GuidanceConfig's)")
    p.add_argument("--quality-blind", action="store_true",
                   help="replace the adapter's per-level embeddings by their mean (the adapter no longer knows each "
                        "position's level): what quality conditioning brings, on the same files")
    p.add_argument("--stream-cache", type=Path, default=None,
                   help="folder of the edge's .cotam files, reused across runs (host maps do not depend on the adapter: "
                        "a second adapter's study on the same photos takes seconds a photo); default: none")
    p.add_argument("--out", default=str(REPO / "eval" / "results" / "adapter_study"), help="output folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from cotam_llava.errors import CheckpointError, CoTAMError
    from cotam_llava.evaluation.adapter_study import STUDY_VARIANTS, run_adapter_fidelity
    from cotam_llava.evaluation.variants import VARIANTS
    from cotam_llava.evaluation.proxies import summarize
    from cotam_llava.evaluation.proxy_report import bd_tables, write_report
    from cotam_llava.training.adapter_trainer import load_adapter_tower
    from cotam_llava.vision.edge import guidance_for
    from cotam_llava.vision.adapter import ADAPTER_WEIGHTS, adapter_codec_path, read_adapter_config
    from cotam_llava.training.data import split_files

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        folder = Path(args.adapter)
        info = read_adapter_config(folder)
        codec_path = args.codec or adapter_codec_path(folder, info)
        tower = load_adapter_tower(folder, codec_path)  # over a learned checkpoint, or hevc / av1
        if args.quality_blind:
            table = tower.adapter.quality_embedding
            if table is None:
                raise CheckpointError(f"{folder}: the adapter has no quality conditioning to take away")
            table.data[:] = table.data.mean(0, keepdim=True)
        if args.held_out:
            files = split_files([args.images], args.held_out)[1]
        else:
            files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if args.limit:
            files = files[: args.limit]
        if not files:
            raise CheckpointError(f"no photos in {args.images}")
        rule, _, cloud = args.guidance_rule.partition("+")
        guidance = guidance_for(tower, rule, args.spread, cloud=bool(cloud), candidates=args.candidates)
        rows = run_adapter_fidelity(tower, files, args.qualities, guidance, progress=not args.no_progress,
                                    classical={name: args.classical_qualities for name in args.classical},
                                    standard={name: args.standard_qualities for name in args.standard},
                                    stream_cache=args.stream_cache,
                                    cache_key=str(info["encoder"]) + (f"|adapter {_digest(folder / ADAPTER_WEIGHTS)}" if cloud else ""))
    except CoTAMError as exc:
        print(f"adapter_study.py: error: {exc}", file=sys.stderr)
        return 1
    points = summarize(rows)
    bd = bd_tables(points, ["cosine", "mse_db"], anchors=("base", *args.classical, *args.standard))
    notes = [
        f"adapter: {folder} (step {info.get('step')}), encoder: {info['encoder']}, codec: {codec_path}",
        f"{len(files)} photos from {args.images}{f', every {args.held_out}-th (held out from training)' if args.held_out else ''}"
        f"; centre squares, canvas {tower.cotam_config.canvas_size}; qualities {args.qualities}; bpp counts every byte "
        f"of the real .cotam file",
        f"guidance: {args.guidance_rule} rule" + (f" (the host's token error at the base rate, levels q ± {args.spread}"
                                                  f"{'; the tokens the cloud makes, adapter included' if cloud else ''}"
                                                  + (f"; {guidance.config.candidates} candidate map(s) judged on real files"
                                                     if guidance.config.verify else "; maps unjudged") + ")"
                                                  if rule == "host" else " (μ ± kσ on shallow attention)"),
        *(["quality-blind adapter: its per-level embeddings replaced by their mean"] if args.quality_blind else []),
        "variants: " + "; ".join(f"{v.name} = guidance {'on' if v.guidance else 'off'}, adapter "
                                 f"{'on' if v.adapter else 'off'}" for v in (VARIANTS[k] for k in STUDY_VARIANTS)),
    ]
    if args.classical:
        notes.append(f"classical references {', '.join(args.classical)} at qualities {args.classical_qualities}: the "
                     f"same picture resized to the canvas, a real file, decoded pixels → the stock encoder; their bpp "
                     f"over the centre square's pixels too")
    if args.standard:
        notes.append(f"standard references {', '.join(args.standard)} at levels {args.standard_qualities}: coded like the "
                     "classical ones, as real .cotam files (hevc+guidance: the guidance map as x265 block QP offsets)")
    paths = write_report("adapter_fidelity", rows, points, bd, Path(args.out), table_metrics=["cosine", "mse", "mse_db"],
                         plot_metrics=["cosine", "mse_db"], title="Final-token fidelity on real DINOv2-S: CoTAM's parts",
                         notes=notes, specs={"cosine": ".4f", "mse": ".4f", "mse_db": ".2f"},
                         labels={"cosine": "token cosine", "mse_db": "−10·log10 token MSE"})
    print(paths["report"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
