"""Codec benchmark: real bpp, PSNR and timings over a folder of images, with BD-rate and an RD plot.

Protocol (DESIGN.md, "Measurement protocol"): bpp = bytes of the real file × 8 /
pixels of the original image (headers included); PSNR on 8-bit RGB, averaged per
image; BD-rate (pchip) of each codec against the anchor (JPEG) measured in the same
run. For learned codecs it also reports the entropy-coding overhead (real payload
bits vs the model's −log2-likelihood estimate) and the header's share of the bits.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..imageio import psnr, to_uint8_array
from .bdrate import BDResult
from .rd import CodedImage, bd_against, curves, write_csv

__all__ = ["BenchRow", "BenchSummary", "run_bench", "summarize", "bd_table", "write_outputs", "format_tables"]


@dataclass
class BenchRow(CodedImage):
    """One image coded by one codec at one quality: PSNR, timings and where the bits went."""

    psnr: float
    encode_ms: float
    decode_ms: float
    payload_bits: float = math.nan
    estimated_bits: float = math.nan
    header_bits: float = math.nan


@dataclass
class BenchSummary:
    """Mean over images of one (codec, quality) point."""

    codec: str
    quality: int
    images: int
    bpp: float
    psnr: float
    encode_ms: float  # median over images
    decode_ms: float  # median over images
    ec_overhead_pct: float = math.nan  # real payload bits / estimated bits − 1
    header_share_pct: float = math.nan  # header bits / all bits
    extra: dict = field(default_factory=dict)


def run_bench(
    images: Sequence[Path],
    codecs: Sequence[tuple[object, Sequence[int]]],
    repeats: int = 1,
    progress: bool = True,
) -> list[BenchRow]:
    """Code every image with every codec at every quality; time the median of ``repeats`` runs.

    Args:
        images: image files.
        codecs: (codec, qualities) pairs; codecs follow ``codec.registry.ImageCodec``.
        repeats: timing repetitions per (image, codec, quality); the bytes come from the first.
    """
    arrays = [(Path(p).name, to_uint8_array(p)) for p in images]
    total = sum(len(q) for _, q in codecs) * len(arrays)
    rows: list[BenchRow] = []
    bar = tqdm(total=total, desc="bench", unit="img", disable=not progress)
    for codec, qualities in codecs:
        for quality in qualities:
            for name, img in arrays:
                bar.set_postfix_str(f"{codec.name} q={quality} {name}")
                enc_t, dec_t = [], []
                for r in range(max(1, repeats)):
                    t0 = time.perf_counter()
                    data = codec.encode(img, quality)
                    t1 = time.perf_counter()
                    rec = codec.decode(data)
                    t2 = time.perf_counter()
                    enc_t.append((t1 - t0) * 1e3)
                    dec_t.append((t2 - t1) * 1e3)
                    if r == 0:
                        first, first_rec = data, rec
                # learned codecs: where the bits went (an extra, untimed pass)
                stats = codec.coding_stats(img, quality) if hasattr(codec, "coding_stats") else {}
                h, w = img.shape[:2]
                rows.append(
                    BenchRow(
                        codec=codec.name, quality=int(quality), image=name, width=w, height=h,
                        bytes=len(first), bpp=len(first) * 8 / (w * h), psnr=psnr(first_rec, img),
                        encode_ms=statistics.median(enc_t), decode_ms=statistics.median(dec_t),
                        payload_bits=stats.get("payload_bits", math.nan),
                        estimated_bits=stats.get("estimated_bits", math.nan),
                        header_bits=stats.get("header_bits", math.nan),
                    )
                )
                bar.update()
    bar.close()
    return rows


def summarize(rows: Sequence[BenchRow]) -> list[BenchSummary]:
    """Average the rows of each (codec, quality)."""
    groups: dict[tuple[str, int], list[BenchRow]] = {}
    for row in rows:
        groups.setdefault((row.codec, row.quality), []).append(row)
    out = []
    for (codec, quality), rs in groups.items():
        payload = sum(r.payload_bits for r in rs)
        estimated = sum(r.estimated_bits for r in rs)
        header = sum(r.header_bits for r in rs)
        total = sum(r.bytes * 8 for r in rs)
        out.append(
            BenchSummary(
                codec=codec, quality=quality, images=len(rs),
                bpp=float(np.mean([r.bpp for r in rs])), psnr=float(np.mean([r.psnr for r in rs])),
                encode_ms=statistics.median(r.encode_ms for r in rs),
                decode_ms=statistics.median(r.decode_ms for r in rs),
                ec_overhead_pct=100.0 * (payload / estimated - 1.0) if estimated == estimated and estimated > 0 else math.nan,
                header_share_pct=100.0 * header / total if header == header else math.nan,
            )
        )
    return out


def bd_table(summary: Sequence[BenchSummary], anchor: str = "jpeg") -> dict[str, BDResult]:
    """BD-rate (PSNR, pchip) of every codec against ``anchor``; empty when the anchor is absent."""
    return bd_against(curves(summary, "psnr"), anchor)


def format_tables(summary: Sequence[BenchSummary], bd: dict[str, BDResult], anchor: str = "jpeg") -> str:
    """Plain-text tables (Markdown-compatible) of the summary and the BD-rates."""
    lines = [
        "| codec | quality | bpp | PSNR (dB) | encode ms | decode ms | EC overhead % | header % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, spec: "–" if v != v else format(v, spec)  # noqa: E731
    for s in sorted(summary, key=lambda s: (s.codec, s.quality)):
        lines.append(
            f"| {s.codec} | {s.quality} | {s.bpp:.4f} | {s.psnr:.2f} | {s.encode_ms:.1f} | {s.decode_ms:.1f} "
            f"| {fmt(s.ec_overhead_pct, '.2f')} | {fmt(s.header_share_pct, '.3f')} |"
        )
    if bd:
        lines += ["", f"| codec | BD-rate vs {anchor} (PSNR, pchip) | note |", "|---|---:|---|"]
        for name, res in bd.items():
            lines.append(f"| {name} | {fmt(res.value, '+.2f')}% | {res.note} |")
    return "\n".join(lines)


def write_outputs(
    rows: Sequence[BenchRow], summary: Sequence[BenchSummary], bd: dict[str, BDResult], out_dir: Path,
    title: str = "", anchor: str = "jpeg",
) -> dict[str, Path]:
    """Write per-image CSV, summary CSV, BD-rate CSV, a Markdown report and the RD plot (PNG)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows": out_dir / "bench_images.csv",
        "summary": out_dir / "bench_summary.csv",
        "bdrate": out_dir / "bdrate.csv",
        "report": out_dir / "bench.md",
        "plot": out_dir / "rd_psnr.png",
    }
    write_csv(paths["rows"], [asdict(r) for r in rows])
    write_csv(paths["summary"], [{k: v for k, v in asdict(s).items() if k != "extra"} for s in summary])
    write_csv(paths["bdrate"], [{"codec": k, "anchor": anchor, "bd_rate_pct": v.value, "note": v.note} for k, v in bd.items()])
    paths["report"].write_text((f"# {title}\n\n" if title else "") + format_tables(summary, bd, anchor) + "\n")
    _plot(summary, paths["plot"], title)
    return paths


def _plot(summary: Sequence[BenchSummary], path: Path, title: str) -> None:
    # Figure + Agg canvas directly: no pyplot, so no global backend state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for codec in sorted({s.codec for s in summary}):
        pts = sorted((s.bpp, s.psnr) for s in summary if s.codec == codec)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=codec)
    ax.set_xlabel("bits per pixel (real files, headers included)")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_title(title or "Rate–distortion")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
