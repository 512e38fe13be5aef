"""[CLS] attention maps and PCA feature images per layer (CoTAM Fig. 4, A.10 Figs. 24–25).

For each chosen layer of one image:

* the [CLS]→patch attention (heads averaged, renormalised over the patches) as a heatmap
  over the image; SigLIP has no [CLS], so the attention each patch receives, averaged over
  all patch queries, stands in (see :func:`~cotam_llava.analysis.metrics.cls_attention`);
* the first three principal components of that layer's patch tokens as RGB.

With a codec and quality, the decoded image gets the same two rows (its PCA projected on
the *original's* basis, so colours compare) plus the per-patch cosine similarity of its
tokens to the original's (Fig. 4b, c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..imageio import ImageLike, psnr, to_uint8_array
from ._common import image_on_grid, new_figure, save_figure
from .encoder import AnalysisEncoder
from .metrics import cls_attention, pca_rgb, token_similarity

__all__ = ["LayerMaps", "MapsReport", "analyze_maps", "plot_maps", "CLS_STAND_IN"]

CLS_STAND_IN = {
    True: "[CLS]→patch attention, heads averaged, renormalised over the patches",
    False: "no [CLS] (SigLIP): attention each patch receives, averaged over all patch queries and heads",
}


@dataclass
class LayerMaps:
    """Maps of one block (grids are (gh, gw), PCA (gh, gw, 3) in [0, 1]).

    Attributes:
        cls_entropy: entropy of the attention map / log(P): 1 = spread evenly, → 0 = on one patch.
        cls_top10_mass: share of the attention on the 10% most attended patches.
        cls_patch_mass: share of [CLS]'s attention that goes to patches before renormalising
            (the rest goes to [CLS] itself and registers); NaN without [CLS].
        compressed_*: the same for the decoded image; similarity_map: per-patch cosine similarity.
    """

    layer: int
    cls_attention: list
    cls_entropy: float
    cls_top10_mass: float
    cls_patch_mass: float
    pca: list
    compressed_cls_attention: list | None = None
    compressed_cls_entropy: float | None = None
    compressed_pca: list | None = None
    similarity_map: list | None = None
    similarity_mean: float | None = None


@dataclass
class MapsReport:
    """[CLS] attention and PCA maps of one image at chosen layers (optionally also of a decoded version)."""

    model: dict
    image: str
    layers: list[int]
    attention_source: str
    maps: list[LayerMaps]
    codec: str | None = None
    quality: int | None = None
    bpp: float | None = None
    psnr: float | None = None


def _map_stats(m: torch.Tensor) -> tuple[float, float]:
    """(normalised entropy, top-10% mass) of a map that sums to 1."""
    flat = m.flatten().double()
    P = flat.numel()
    entropy = float(-(flat * flat.clamp_min(1e-30).log()).sum() / math.log(P)) if P > 1 else 0.0
    k = max(1, round(0.1 * P))
    return entropy, float(flat.topk(k).values.sum())


def analyze_maps(
    encoder: AnalysisEncoder,
    image: ImageLike,
    layers: Sequence[int],
    codec: object | None = None,
    quality: int | None = None,
) -> tuple[MapsReport, np.ndarray | None]:
    """[CLS] attention and PCA maps at ``layers`` for one image (and its decoded version).

    Args:
        encoder: the vision transformer.
        image: path, PIL image, uint8 array or tensor.
        layers: block indices.
        codec, quality: optional ``ImageCodec`` and quality: adds the decoded image's rows.

    Returns:
        (report, the decoded uint8 (H, W, 3) image or None).
    """
    arr = to_uint8_array(image)
    batch = [arr]
    rec = None
    bpp = quality_psnr = None
    if codec is not None:
        data = codec.encode(arr, int(quality))
        rec = to_uint8_array(codec.decode(data))
        bpp = len(data) * 8.0 / (arr.shape[0] * arr.shape[1])
        quality_psnr = min(psnr(rec, arr), 100.0)
        batch.append(rec)
    trace = encoder(batch, attentions=True)
    layout = encoder.layout
    p = layout.num_prefix
    gh, gw = layout.grid
    out = []
    for l in sorted(set(layers)):
        attn = trace.attentions[l].float()
        hidden = trace.hidden_states[l + 1].float()
        cmap = cls_attention(attn, layout)  # (B, gh, gw)
        entropy, top10 = _map_stats(cmap[0])
        patch_mass = float(attn[0].mean(dim=0)[0, p:].sum()) if layout.has_cls else math.nan
        rgb, basis = pca_rgb(hidden[0, p:])
        lm = LayerMaps(l, cmap[0].tolist(), entropy, top10, patch_mass, rgb.reshape(gh, gw, 3).tolist())
        if rec is not None:
            lm.compressed_cls_attention = cmap[1].tolist()
            lm.compressed_cls_entropy = _map_stats(cmap[1])[0]
            lm.compressed_pca = pca_rgb(hidden[1, p:], basis)[0].reshape(gh, gw, 3).tolist()
            sim = token_similarity(hidden[:1], hidden[1:2], layout)
            lm.similarity_map = sim.per_patch[0].tolist()
            lm.similarity_mean = float(sim.tokens[0])
        out.append(lm)
    name = Path(image).name if isinstance(image, (str, Path)) else "image"
    report = MapsReport(
        model=encoder.describe(), image=name, layers=sorted(set(layers)), attention_source=CLS_STAND_IN[layout.has_cls],
        maps=out, codec=getattr(codec, "name", None), quality=None if codec is None else int(quality),
        bpp=bpp, psnr=quality_psnr,
    )
    return report, rec


def plot_maps(report: MapsReport, image: ImageLike, path: str | Path, decoded: ImageLike | None = None,
              title: str = "") -> Path:
    """Fig. 4-style grid: columns = layers; rows = attention and PCA of the image (then of the decoded
    image, and the per-patch token similarity, when the report has them)."""
    img = to_uint8_array(image)
    grid = tuple(report.model["grid"])
    gh, gw = grid
    has_rec = report.maps and report.maps[0].similarity_map is not None
    rows = 5 if has_rec else 2
    cols = len(report.maps) + 1
    aspect = img.shape[0] / img.shape[1]
    panel = 2.3
    fig = new_figure(panel * cols, panel * aspect * rows + 0.9, dpi=90)
    sim_lo = 1.0
    if has_rec:
        sim_lo = min(float(np.min(m.similarity_map)) for m in report.maps)
        sim_lo = min(sim_lo, 0.99)

    def cell(r: int, c: int):
        ax = fig.add_subplot(rows, cols, r * cols + c + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    def heat(ax, picture, values, cmap="inferno", vmin=None, vmax=None):
        image_on_grid(ax, picture, grid, alpha=1.0)
        return ax.imshow(np.asarray(values, dtype=float), extent=(0, gw, gh, 0), cmap=cmap, alpha=0.65,
                         interpolation="bilinear", vmin=vmin, vmax=vmax)

    row_names = ["attention", "PCA"] + (["attention (decoded)", "PCA (decoded)", "token similarity"] if has_rec else [])
    for r, name in enumerate(row_names):
        ax = cell(r, 0)
        if r == 0:
            image_on_grid(ax, img, grid)
            ax.set_title(f"{report.image}", fontsize=8)
        elif r == 2 and decoded is not None:
            image_on_grid(ax, to_uint8_array(decoded), grid)
            ax.set_title(f"{report.codec} q={report.quality}\n{report.bpp:.3f} bpp, {report.psnr:.1f} dB", fontsize=8)
        else:
            ax.axis("off")
        ax.text(-0.08, 0.5, name, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=8)
    for c, m in enumerate(report.maps, start=1):
        ax = cell(0, c)
        heat(ax, img, m.cls_attention)
        ax.set_title(f"layer {m.layer}\nentropy {m.cls_entropy:.2f}, top10% {m.cls_top10_mass:.0%}", fontsize=8)
        ax = cell(1, c)
        image_on_grid(ax, np.asarray(m.pca, dtype=float), grid, shape=img.shape[:2], interpolation="nearest")
        if has_rec:
            dec = to_uint8_array(decoded) if decoded is not None else img
            ax = cell(2, c)
            heat(ax, dec, m.compressed_cls_attention)
            ax.set_title(f"entropy {m.compressed_cls_entropy:.2f}", fontsize=8)
            ax = cell(3, c)
            image_on_grid(ax, np.asarray(m.compressed_pca, dtype=float), grid, shape=img.shape[:2],
                          interpolation="nearest")
            ax = cell(4, c)
            shown = ax.imshow(np.asarray(m.similarity_map, dtype=float), cmap="RdYlGn", vmin=sim_lo, vmax=1.0,
                              extent=(0, gw, gh, 0), interpolation="nearest")
            ax.set_aspect((img.shape[0] / gh) / (img.shape[1] / gw))
            ax.set_title(f"mean cos {m.similarity_mean:.4f}", fontsize=8)
            if c == len(report.maps):
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title or f"{report.model['model']}: {report.attention_source}; PCA = first 3 components of the patch tokens",
                 fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
