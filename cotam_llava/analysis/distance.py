"""Per-layer attention distance (CoTAM §2.2.1, Fig. 5a/b; A.8 Fig. 20) averaged over a set of images.

For every image and layer: D_avg and D_top1 of the head-averaged attention map (the
paper's "one map A per layer") and of every head (the ViT paper's per-head mean attention
distance), plus the layer's Inflow/Outflow statistics. Only running sums are kept, one
batch of images in memory at a time, so N can be large.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..imageio import ImageLike, to_uint8_array
from ._common import RunningStats, new_figure, save_figure, shade_stages
from .encoder import AnalysisEncoder
from .metrics import (
    FLOW_STAT_NAMES,
    StageSplit,
    attention_distance,
    flow_statistics,
    information_flow,
    mean_pairwise_distance,
    patch_distance_matrix,
    stage_boundaries,
)

__all__ = ["DistanceReport", "analyze_attention_distance", "plot_attention_distance", "TOKEN_CONVENTION"]

TOKEN_CONVENTION = (
    "D_avg/D_top1: patch queries and patch keys only; [CLS]/register rows and columns dropped and each "
    "query's patch attention renormalised to 1 (ViT convention); distances in patch units between grid "
    "centres. Layer values use the head-averaged attention map; *_heads are per head. Flow statistics "
    "use the head-averaged map over all tokens ([CLS] and registers are possible targets)."
)


@dataclass
class DistanceReport:
    """Attention distance per layer over ``num_images`` images.

    Attributes:
        model: the encoder's facts (:meth:`AnalysisEncoder.describe`).
        images: image names, in order.
        d_avg, d_avg_std: (L,) mean and std over images of D_avg (head-averaged map), patch units.
        d_top1, d_top1_std: (L,) the same for D_top1.
        d_avg_heads, d_top1_heads: (L, H) per-head means over images.
        uniform_d_avg: D_avg of uniform attention on this grid (the "fully global" reference).
        flow: statistic name → (L,) mean over images (see :class:`~cotam_llava.analysis.metrics.FlowStatistics`).
        stages: the three-stage split read off the D_avg U-shape (or thirds, with a note).
    """

    model: dict
    images: list[str]
    d_avg: list[float]
    d_avg_std: list[float]
    d_top1: list[float]
    d_top1_std: list[float]
    d_avg_heads: list[list[float]]
    d_top1_heads: list[list[float]]
    uniform_d_avg: float
    flow: dict[str, list[float]]
    stages: StageSplit | None
    convention: str = TOKEN_CONVENTION
    num_images: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_images = len(self.images)


class DistanceAccumulator:
    """Running per-layer sums of attention distances and flow statistics (memory O(L·H))."""

    def __init__(self, encoder: AnalysisEncoder) -> None:
        L, H = encoder.num_layers, encoder.num_heads
        self.encoder = encoder
        self.dist = patch_distance_matrix(encoder.layout, encoder.device)
        self.d_avg, self.d_top1 = RunningStats(L), RunningStats(L)
        self.d_avg_heads, self.d_top1_heads = RunningStats((L, H)), RunningStats((L, H))
        self.flow = RunningStats((L, len(FLOW_STAT_NAMES)))

    def add(self, attentions: Sequence) -> None:
        """Add a batch: L attention maps (B, H, T, T)."""
        layout = self.encoder.layout
        per_layer = [attention_distance(a, layout, self.dist) for a in attentions]
        flows = [flow_statistics(information_flow(a), layout, self.dist).as_dict() for a in attentions]
        B = attentions[0].shape[0]
        for b in range(B):
            self.d_avg.add(np.array([r.d_avg[b].item() for r in per_layer]))
            self.d_top1.add(np.array([r.d_top1[b].item() for r in per_layer]))
            self.d_avg_heads.add(np.stack([r.d_avg_heads[b].cpu().numpy() for r in per_layer]))
            self.d_top1_heads.add(np.stack([r.d_top1_heads[b].cpu().numpy() for r in per_layer]))
            self.flow.add(np.array([[f[name][b].item() for name in FLOW_STAT_NAMES] for f in flows]))

    def report(self, images: list[str]) -> DistanceReport:
        d_avg = self.d_avg.mean
        flow_mean = self.flow.mean
        return DistanceReport(
            model=self.encoder.describe(), images=images,
            d_avg=d_avg.tolist(), d_avg_std=self.d_avg.std.tolist(),
            d_top1=self.d_top1.mean.tolist(), d_top1_std=self.d_top1.std.tolist(),
            d_avg_heads=self.d_avg_heads.mean.tolist(), d_top1_heads=self.d_top1_heads.mean.tolist(),
            uniform_d_avg=mean_pairwise_distance(self.encoder.layout.grid),
            flow={name: flow_mean[:, i].tolist() for i, name in enumerate(FLOW_STAT_NAMES)},
            stages=stage_boundaries(d_avg) if self.encoder.num_layers >= 3 else None,
        )


def _name(image: ImageLike, i: int) -> str:
    return Path(image).name if isinstance(image, (str, Path)) else f"image{i}"


def analyze_attention_distance(
    encoder: AnalysisEncoder,
    images: Sequence[ImageLike],
    batch_size: int = 2,
    progress: bool = True,
) -> DistanceReport:
    """D_avg / D_top1 per layer (and flow statistics), averaged over ``images``.

    Args:
        encoder: the vision transformer (:func:`~cotam_llava.analysis.encoder.load_encoder`).
        images: paths, PIL images, uint8 arrays or tensors; read one batch at a time.
        batch_size: images per forward pass (attention memory: L·B·H·T² floats).

    Returns:
        :class:`DistanceReport`.
    """
    acc = DistanceAccumulator(encoder)
    names = [_name(im, i) for i, im in enumerate(images)]
    batch_size = max(1, int(batch_size))
    with tqdm(total=len(images), desc="attention distance", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            chunk = [to_uint8_array(im) for im in images[start : start + batch_size]]
            trace = encoder(chunk, attentions=True)
            acc.add(trace.attentions)
            del trace
            bar.update(len(chunk))
    return acc.report(names)


def plot_attention_distance(report: DistanceReport, path: str | Path, title: str = "") -> Path:
    """Fig. 5(a)(b)-style figure: D_avg and D_top1 per layer (mean ± std over images, per-head dots, stages)."""
    L = len(report.d_avg)
    x = np.arange(L)
    fig = new_figure(10.5, 3.8)
    panels = [
        ("D_avg: attention-weighted mean distance", report.d_avg, report.d_avg_std, report.d_avg_heads),
        ("D_top1: distance to the most-attended patch", report.d_top1, report.d_top1_std, report.d_top1_heads),
    ]
    for i, (name, mean, std, heads) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        shade_stages(ax, report.stages, labels=i == 0)
        heads = np.asarray(heads, dtype=float)
        for h in range(heads.shape[1]):
            ax.scatter(x, heads[:, h], s=7, color="0.55", alpha=0.6, lw=0, label="heads" if h == 0 else None)
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.fill_between(x, mean - std, mean + std, color="k", alpha=0.12, lw=0)
        ax.plot(x, mean, "o-", color="k", ms=3.5, lw=1.6, label="layer (head-averaged map)")
        ax.axhline(report.uniform_d_avg, color="0.4", ls="--", lw=0.9, label="uniform attention")
        ax.set_xlabel("layer (transformer block)")
        ax.set_ylabel("patches")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(x if L <= 24 else x[::2])
        ax.grid(True, alpha=0.25)
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    stage_note = ""
    if report.stages is not None:
        s = report.stages
        stage_note = f"; stages from {s.method}: 1=[0,{s.stage2_start}) 2=[{s.stage2_start},{s.stage3_start}) 3=[{s.stage3_start},{L})"
    fig.suptitle(title or f"{report.model['model']}: attention distance over {report.num_images} images{stage_note}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
