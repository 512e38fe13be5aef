"""Information inflow/outflow of one image (CoTAM §2.2.1, Fig. 3; A.11 Fig. 26).

For each chosen layer, every patch token k is drawn with an arrow along its main
pathway on the (head-averaged) attention map:

* **Inflow** (top row): an arrow from ``Inflow(k) = argmax_j A_kj`` to k, the token k
  takes most from; a dot at k when that token is [CLS] (orange), a register (purple) or k itself (grey ring);
* **Outflow** (bottom row): an arrow from k to ``Outflow(k) = argmax_i A_ik``, the query that
  takes most from k; dots likewise.

Arrows point the way information moves and are coloured by length (patch units).
:func:`plot_flow_statistics` draws the per-layer statistics (share of inflow from [CLS],
mean inflow/outflow distances, concentration on "summary tokens").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..imageio import ImageLike, to_uint8_array
from ._common import image_on_grid, new_figure, save_figure, shade_stages
from .encoder import AnalysisEncoder
from .metrics import (
    FLOW_STAT_NAMES,
    StageSplit,
    TokenLayout,
    flow_statistics,
    information_flow,
    patch_distance_matrix,
)

__all__ = ["LayerFlow", "FlowReport", "analyze_flow", "plot_information_flow", "plot_flow_statistics", "token_names"]


@dataclass
class LayerFlow:
    """One layer's pathways for one image.

    Attributes:
        layer: block index.
        inflow: (T,) token index each token takes most from.
        outflow: (T,) token index of the query that takes most from each token.
    """

    layer: int
    inflow: list[int]
    outflow: list[int]


@dataclass
class FlowReport:
    """Inflow/outflow of one image.

    Attributes:
        model: encoder facts. image: its name. tokens: names of the T tokens ("[CLS]", "reg0", "p(r,c)").
        flows: the chosen layers' pathways. statistics: name → (L,) per-layer values for this image.
    """

    model: dict
    image: str
    layers: list[int]
    tokens: list[str]
    flows: list[LayerFlow]
    statistics: dict[str, list[float]]


def token_names(layout: TokenLayout) -> list[str]:
    """Readable names of the tokens in order: [CLS], reg0.., p(row,col).."""
    names = ["[CLS]"] if layout.has_cls else []
    names += [f"reg{i}" for i in range(layout.num_registers)]
    gh, gw = layout.grid
    return names + [f"p({r},{c})" for r in range(gh) for c in range(gw)]


def analyze_flow(encoder: AnalysisEncoder, image: ImageLike, layers: Sequence[int]) -> FlowReport:
    """Inflow/Outflow of every token at ``layers`` and the flow statistics of all layers, for one image.

    Args:
        encoder: the vision transformer.
        image: path, PIL image, uint8 array or tensor.
        layers: block indices to keep the pathways of (statistics cover every layer).
    """
    arr = to_uint8_array(image)
    trace = encoder([arr], attentions=True)
    layout = encoder.layout
    dist = patch_distance_matrix(layout, encoder.device)
    stats: dict[str, list[float]] = {name: [] for name in FLOW_STAT_NAMES}
    flows = []
    for l, attn in enumerate(trace.attentions):
        flow = information_flow(attn)
        for name, value in flow_statistics(flow, layout, dist).as_dict().items():
            stats[name].append(float(value[0]))
        if l in layers:
            flows.append(LayerFlow(l, flow.inflow[0].tolist(), flow.outflow[0].tolist()))
    name = Path(image).name if isinstance(image, (str, Path)) else "image"
    return FlowReport(encoder.describe(), name, sorted(set(layers)), token_names(layout), flows, stats)


def _layout_of(report: FlowReport) -> TokenLayout:
    m = report.model
    return TokenLayout(tuple(m["grid"]), bool(m["has_cls"]), int(m["num_registers"]))


def _draw_pathways(ax, targets: np.ndarray, layout: TokenLayout, incoming: bool, stride: int, cmap) -> None:
    """Arrows between patch centres (data coords = patch units); dots for [CLS]/register/self targets."""
    p = layout.num_prefix
    gh, gw = layout.grid
    P = layout.num_patches
    k = np.arange(P)
    rows, cols = k // gw, k % gw
    keep = (rows % stride == 0) & (cols % stride == 0)
    tgt = targets[p:]
    is_patch = tgt >= p
    t = np.where(is_patch, tgt - p, 0)
    tr, tc = t // gw, t % gw
    x, y = cols + 0.5, rows + 0.5
    tx, ty = tc + 0.5, tr + 0.5
    self_ = is_patch & (t == k)
    arrows = keep & is_patch & ~self_
    if incoming:  # from the source token to k
        x0, y0, u, v = tx, ty, x - tx, y - ty
    else:  # from k to the query that takes from it
        x0, y0, u, v = x, y, tx - x, ty - y
    if arrows.any():
        length = np.hypot(u, v)[arrows]
        ax.quiver(x0[arrows], y0[arrows], u[arrows], v[arrows], length, cmap=cmap, clim=(0, math.hypot(gh, gw)),
                  angles="xy", scale_units="xy", scale=1, width=0.006, headwidth=3.5, headlength=4, alpha=0.9)
    marks = [
        (keep & (tgt == 0) & layout.has_cls, "#ff7f0e", "o", "[CLS]"),
        (keep & ~is_patch & (tgt >= int(layout.has_cls)), "#9467bd", "o", "register"),
        (keep & self_, "none", "o", "self"),
    ]
    size = max(4.0, 900.0 / max(gh, gw) ** 1.5)
    for mask, color, marker, label in marks:
        if mask.any():
            if color == "none":
                ax.scatter(x[mask], y[mask], s=size, facecolors="none", edgecolors="0.3", lw=0.6, label=label)
            else:
                ax.scatter(x[mask], y[mask], s=size, color=color, marker=marker, lw=0, label=label)


def plot_information_flow(
    report: FlowReport, image: ImageLike, path: str | Path, stride: int | None = None, title: str = ""
) -> Path:
    """Fig. 3-style figure: inflow (top) and outflow (bottom) pathways of the chosen layers over the image.

    Args:
        report: from :func:`analyze_flow`.
        image: the same image (drawn at its own aspect; patch grid stretched over it).
        stride: draw every ``stride``-th patch row/column (default: keeps ≤ ~20 per side).
    """
    from matplotlib import colormaps

    layout = _layout_of(report)
    img = to_uint8_array(image)
    gh, gw = layout.grid
    stride = stride or max(1, math.ceil(max(gh, gw) / 20))
    n = len(report.flows)
    aspect = img.shape[0] / img.shape[1]
    panel = 3.0
    fig = new_figure(panel * n + 0.6, 2 * panel * aspect + 1.3, dpi=90)
    cmap = colormaps["viridis"]
    stats = report.statistics
    for col, lf in enumerate(report.flows):
        for row, (kind, targets) in enumerate((("inflow", lf.inflow), ("outflow", lf.outflow))):
            ax = fig.add_subplot(2, n, row * n + col + 1)
            ax.imshow(np.full_like(img, 255), extent=(0, gw, gh, 0))
            image_on_grid(ax, img, layout.grid, alpha=0.45)
            _draw_pathways(ax, np.asarray(targets), layout, incoming=kind == "inflow", stride=stride, cmap=cmap)
            l = lf.layer
            cls = stats[f"{kind}_to_cls"][l]
            cls_txt = f"[CLS] {cls:.0%} · " if cls == cls else ""
            ax.set_title(f"layer {l} {kind}\n{cls_txt}self {stats[f'{kind}_to_self'][l]:.0%} · "
                         f"dist {stats[f'{kind}_distance'][l]:.1f}", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=6, loc="lower left", markerscale=0.8, framealpha=0.8)
    fig.suptitle(title or f"{report.image}: information flow ({report.model['model']}); arrows = argmax pathways, "
                 f"colour = length (patches)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_flow_statistics(
    statistics: dict[str, Sequence[float]], path: str | Path, stages: StageSplit | None = None, title: str = ""
) -> Path:
    """Per-layer flow statistics: inflow/outflow targets, pathway lengths and summary-token concentration."""
    L = len(statistics["inflow_distance"])
    x = np.arange(L)
    fig = new_figure(12, 3.5)
    panels = [
        ("where Inflow comes from (share of patches)",
         [("inflow_to_cls", "[CLS]"), ("inflow_to_registers", "registers"), ("inflow_to_self", "self")], "share"),
        ("pathway length (patch targets)", [("inflow_distance", "inflow"), ("outflow_distance", "outflow")], "patches"),
        ("concentration and outflow to [CLS]",
         [("inflow_top5_share", "inflow to top-5 patches"), ("outflow_to_cls", "outflow to [CLS]"),
          ("outflow_to_self", "outflow to self")], "share"),
    ]
    for i, (name, series, unit) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        shade_stages(ax, stages, labels=False)
        for key, label in series:
            values = np.asarray(statistics[key], dtype=float)
            if np.isfinite(values).any() and not (key == "inflow_to_registers" and np.nanmax(values) == 0):
                ax.plot(x, values, "o-", ms=3, lw=1.3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel(unit)
        ax.set_xticks(x if L <= 24 else x[::2])
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
