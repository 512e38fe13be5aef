"""Which layers lose most under compression: a table per codec and quality (Markdown + JSON).

For each (codec, quality) of a :class:`~cotam_llava.analysis.similarity.SimilarityReport`
(block similarities s_0..s_{L−1}, s_emb before them):

* **lowest**: the blocks with the lowest similarity (most damaged tokens) and their stage;
* **largest drop**: the block l with the largest s_{l−1} − s_l (s_{−1} = s_emb): where damage is *created*;
* **stage means**: mean similarity over each stage;
* **stage-3 recovery**: s_{L−1} − min over stage 3;
* **early-stage-3 change**: min over the first half of stage 3 − s at the last stage-2 block
  (negative: similarity falls on entering stage 3, a local dip even when it is not the minimum);
* **early-stage-3 dip** (the paper's finding, Fig. 5c): yes when the lowest block lies in stage 3
  but is not the last block, and the last block recovers at least 10% of the loss there
  (s_{L−1} − s_min ≥ 0.1·(1 − s_min)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ._common import write_json
from .similarity import SimilarityReport

__all__ = ["LayerLossSummary", "summarize_similarity", "summary_markdown", "write_summary", "merge_reports",
           "DIP_RECOVERY_FRACTION"]

#: The share of the stage-3 minimum's loss the last block must win back to count as a dip.
DIP_RECOVERY_FRACTION = 0.1


@dataclass
class LayerLossSummary:
    """Where one (codec, quality) loses most (block indices 0..L−1)."""

    codec: str
    quality: int
    bpp: float
    psnr: float
    final_similarity: float
    mean_similarity: float
    lowest_layers: list[int]
    lowest_similarity: float
    lowest_stage: int
    largest_drop_layer: int
    largest_drop: float
    stage_means: list[float]
    stage3_recovery: float
    early_stage3_change: float
    early_stage3_dip: bool


def summarize_similarity(report: SimilarityReport, top: int = 3) -> list[LayerLossSummary]:
    """One :class:`LayerLossSummary` per point of ``report``."""
    st = report.stages
    rows = []
    for p in report.points:
        s = p.blocks
        L = s.size
        if L != st.num_layers:
            raise ConfigError(f"{p.label}: {L} layers but stages for {st.num_layers}")
        order = [int(i) for i in np.argsort(s, kind="stable")[:top]]
        low = order[0]
        prev = np.concatenate([[p.similarity[0]], s[:-1]])
        drops = prev - s
        drop_layer = int(np.nanargmax(drops))
        stage3 = s[st.stage3_start:]
        recovery = float(s[-1] - stage3.min())
        early = stage3[: max(1, stage3.size // 2)]
        early_change = float(early.min() - s[st.stage3_start - 1])
        dip = (st.stage_of(low) == 3 and low < L - 1
               and s[-1] - s[low] >= DIP_RECOVERY_FRACTION * (1.0 - s[low]) and s[low] < 1.0)
        rows.append(LayerLossSummary(
            codec=p.codec, quality=p.quality, bpp=p.bpp, psnr=p.psnr,
            final_similarity=float(s[-1]), mean_similarity=float(s.mean()),
            lowest_layers=order, lowest_similarity=float(s[low]), lowest_stage=st.stage_of(low),
            largest_drop_layer=drop_layer, largest_drop=float(drops[drop_layer]),
            stage_means=[float(s[a:b].mean()) for a, b in st.ranges()],
            stage3_recovery=recovery, early_stage3_change=early_change, early_stage3_dip=bool(dip),
        ))
    return rows


def summary_markdown(report: SimilarityReport, rows: Sequence[LayerLossSummary]) -> str:
    """Two Markdown tables: where each point loses most, and its similarity at every layer."""
    st = report.stages
    L = st.num_layers
    out = [
        f"Model `{report.model['model']}` ({report.model['family']}, {L} blocks), {len(report.images)} images. "
        f"Stages ({st.method}{'; ' + st.note if st.note else ''}): 1 = blocks 0–{st.stage2_start - 1}, "
        f"2 = {st.stage2_start}–{st.stage3_start - 1}, 3 = {st.stage3_start}–{L - 1}.",
        "",
        "| codec | q | bpp | PSNR | final sim | lowest blocks (stage) | lowest sim | largest drop (block: Δ) "
        "| mean sim stage 1 / 2 / 3 | stage-3 recovery | early-stage-3 change | early-stage-3 dip |",
        "|---|---:|---:|---:|---:|---|---:|---|---|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.codec} | {r.quality} | {r.bpp:.3f} | {r.psnr:.2f} | {r.final_similarity:.4f} | "
            f"{', '.join(map(str, r.lowest_layers))} ({r.lowest_stage}) | {r.lowest_similarity:.4f} | "
            f"{r.largest_drop_layer}: {r.largest_drop:+.4f} | "
            f"{' / '.join(f'{v:.4f}' for v in r.stage_means)} | {r.stage3_recovery:+.4f} | "
            f"{r.early_stage3_change:+.4f} | {'yes' if r.early_stage3_dip else 'no'} |"
        )
    out += ["", "Similarity after every block (emb = embeddings):", ""]
    out.append("| codec | q | " + " | ".join(report.layer_labels) + " |")
    out.append("|---|---:|" + "---:|" * len(report.layer_labels))
    for p in report.points:
        out.append(f"| {p.codec} | {p.quality} | " + " | ".join(f"{v:.4f}" for v in p.similarity) + " |")
    return "\n".join(out) + "\n"


def write_summary(report: SimilarityReport, out_dir: str | Path, top: int = 3) -> dict[str, Path]:
    """Write ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    rows = summarize_similarity(report, top)
    paths = {"summary_json": out_dir / "summary.json", "summary_md": out_dir / "summary.md"}
    write_json(paths["summary_json"], {"model": report.model, "stages": report.stages, "num_images": len(report.images),
                                       "dip_recovery_fraction": DIP_RECOVERY_FRACTION, "rows": rows})
    try:
        paths["summary_md"].write_text(summary_markdown(report, rows))
    except OSError as exc:
        raise ConfigError(f"cannot write {paths['summary_md']}: {exc}") from exc
    return paths


def merge_reports(reports: Sequence[SimilarityReport]) -> SimilarityReport:
    """Concatenate the points of reports on the same model and images (stages of the first)."""
    if not reports:
        raise ConfigError("no similarity report given")
    first = reports[0]
    points = list(first.points)
    for r in reports[1:]:
        if r.model.get("model") != first.model.get("model") or r.layer_labels != first.layer_labels:
            raise ConfigError("similarity reports of different models cannot be merged")
        if r.images != first.images:
            raise ConfigError("similarity reports over different images cannot be merged")
        points += r.points
    return SimilarityReport(first.model, first.images, first.layer_labels, first.stages, points, first.d_avg)
