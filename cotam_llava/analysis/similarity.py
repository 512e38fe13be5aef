"""Layer-wise token similarity between original and compressed images (CoTAM §2.2.2, Fig. 5c; A.8 Fig. 21).

For each image, the original and its decoded version for every (codec, quality) go through
the same encoder; at every layer the cosine similarity of each token with the same token
of the original is averaged over tokens, then over images::

    image ─codec.encode(q)─▶ bytes ─decode─▶ x̂      (full resolution, real files: bpp from the bytes)
    image, x̂ ─resize, normalise─▶ encoder ─▶ hidden_states[0..L] (T, D) each
    s_l = mean_t cos(h_l(image)_t, h_l(x̂)_t)        l = emb, 0, …, L−1

The three stages (Fig. 5 colours) come from the user, from the D_avg U-shape measured on
the same original images (``stages="auto"``), or equal thirds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..imageio import ImageLike, psnr, to_uint8_array
from ._common import RunningStats, new_figure, save_figure, shade_stages
from .encoder import AnalysisEncoder
from .metrics import StageSplit, attention_distance, patch_distance_matrix, stage_boundaries, stages_by_thirds, token_similarity

__all__ = ["CodecPoint", "SimilarityReport", "analyze_similarity", "plot_similarity", "resolve_stages"]

SIMILARITY_CONVENTION = (
    "similarity[0] is the embedding output, similarity[l+1] the output of block l; each value is the cosine "
    "similarity of a token with the same token of the original image, averaged over all tokens ([CLS], "
    "registers, patches), then over images. patch_similarity averages patch tokens only; cls_similarity is "
    "the [CLS] token's (null without [CLS])."
)


@dataclass
class CodecPoint:
    """One (codec, quality) averaged over the images.

    Attributes:
        bpp: mean bits per pixel of the real files (header included). psnr: mean RGB PSNR (dB).
        similarity, similarity_std: (L+1,) mean/std over images of the all-token cosine similarity;
            index 0 = embeddings, l+1 = block l.
        patch_similarity, cls_similarity: (L+1,) means over patch tokens only / of [CLS].
        per_image: per image {image, bpp, psnr, final_similarity, min_similarity}.
    """

    codec: str
    quality: int
    bpp: float
    psnr: float
    similarity: list[float]
    similarity_std: list[float]
    patch_similarity: list[float]
    cls_similarity: list[float]
    per_image: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.codec} q={self.quality}"

    @property
    def blocks(self) -> np.ndarray:
        """(L,) similarity after each block (without the embedding entry)."""
        return np.asarray(self.similarity[1:], dtype=float)


@dataclass
class SimilarityReport:
    """Layer-wise similarity of every (codec, quality) point.

    Attributes:
        model: encoder facts. images: names. layer_labels: ["emb", "0", …, "L−1"].
        stages: the split used for plots and summaries.
        d_avg: (L,) D_avg of the original images when stages were measured ("auto"), else None.
        points: one :class:`CodecPoint` per (codec, quality).
    """

    model: dict
    images: list[str]
    layer_labels: list[str]
    stages: StageSplit
    points: list[CodecPoint]
    d_avg: list[float] | None = None
    convention: str = SIMILARITY_CONVENTION

    @classmethod
    def from_dict(cls, data: dict) -> "SimilarityReport":
        """Rebuild a report from its JSON (``write_json`` output)."""
        try:
            stages = StageSplit(**data["stages"])
            points = [CodecPoint(**{k: _nan(v) for k, v in p.items()}) for p in data["points"]]
            return cls(model=data["model"], images=list(data["images"]), layer_labels=list(data["layer_labels"]),
                       stages=stages, points=points, d_avg=data.get("d_avg"))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a similarity report: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> "SimilarityReport":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"cannot read similarity report {path}: {exc}") from exc


def _nan(value):
    """JSON null → NaN inside lists of floats."""
    if isinstance(value, list):
        return [float("nan") if v is None else v for v in value]
    return float("nan") if value is None else value


def resolve_stages(stages: StageSplit | str | Sequence[int], num_layers: int, d_avg: Sequence[float] | None = None) -> StageSplit:
    """"auto" (U-shape of ``d_avg``), "thirds", (stage2_start, stage3_start) or a StageSplit → StageSplit."""
    if isinstance(stages, StageSplit):
        if stages.num_layers != num_layers:
            raise ConfigError(f"stages are for {stages.num_layers} layers, the encoder has {num_layers}")
        return stages
    if isinstance(stages, str):
        if stages == "thirds":
            return stages_by_thirds(num_layers)
        if stages == "auto":
            if d_avg is None:
                return stages_by_thirds(num_layers, "no attention distance measured")
            return stage_boundaries(d_avg)
        raise ConfigError(f"stages must be 'auto', 'thirds' or two block indices, got {stages!r}")
    values = list(stages)
    if len(values) != 2:
        raise ConfigError(f"stages take two block indices (stage 2 start, stage 3 start), got {values}")
    return StageSplit(num_layers, int(values[0]), int(values[1]), "user")


def analyze_similarity(
    encoder: AnalysisEncoder,
    images: Sequence[ImageLike],
    codecs: Sequence[tuple[object, Sequence[int]]],
    stages: StageSplit | str | Sequence[int] = "auto",
    batch_size: int = 8,
    progress: bool = True,
) -> SimilarityReport:
    """Per-layer cosine similarity of hidden states, original vs compressed, for every codec and quality.

    Args:
        encoder: the vision transformer.
        images: paths, PIL images, uint8 arrays or tensors (read one at a time).
        codecs: (codec, qualities) pairs; codecs follow ``codec.registry.ImageCodec``
            (``encode(uint8 (H, W, 3), q) -> bytes``, ``decode(bytes) -> uint8 (H, W, 3)``).
        stages: "auto" (measure D_avg on the originals and read the U-shape; needs the attention
            maps of the original images), "thirds", or (stage2_start, stage3_start).
        batch_size: decoded images per forward pass.

    Returns:
        :class:`SimilarityReport`.
    """
    if not codecs or not any(len(q) for _, q in codecs):
        raise ConfigError("no codec/quality to analyse")
    L = encoder.num_layers
    measure = isinstance(stages, str) and stages == "auto"
    dist = patch_distance_matrix(encoder.layout, encoder.device) if measure else None
    d_avg = RunningStats(L)
    keys = [(codec, int(q)) for codec, qs in codecs for q in qs]
    sims = {i: RunningStats((3, L + 1)) for i in range(len(keys))}
    rates: dict[int, list[dict]] = {i: [] for i in range(len(keys))}
    names = []
    batch_size = max(1, int(batch_size))
    bar = tqdm(total=len(images) * len(keys), desc="similarity", unit="img", disable=not progress)
    for n, image in enumerate(images):
        name = Path(image).name if isinstance(image, (str, Path)) else f"image{n}"
        names.append(name)
        arr = to_uint8_array(image)
        ref = encoder([arr], attentions=measure)
        if measure:
            d_avg.add(np.array([attention_distance(a, encoder.layout, dist).d_avg[0].item() for a in ref.attentions]))
        ref_hidden = ref.hidden_states
        del ref
        for start in range(0, len(keys), batch_size):
            chunk = list(range(start, min(start + batch_size, len(keys))))
            decoded = []
            for i in chunk:
                codec, q = keys[i]
                bar.set_postfix_str(f"{name} {codec.name} q={q}", refresh=False)
                data = codec.encode(arr, q)
                rec = to_uint8_array(codec.decode(data))
                h, w = arr.shape[:2]
                rates[i].append({"image": name, "bpp": len(data) * 8.0 / (h * w), "psnr": psnr(rec, arr)})
                decoded.append(rec)
            trace = encoder(decoded, attentions=False)
            per_layer = []
            for ref_h, h in zip(ref_hidden, trace.hidden_states):
                s = token_similarity(ref_h.expand_as(h), h, encoder.layout)
                per_layer.append(np.stack([s.tokens.cpu().numpy(), s.patches.cpu().numpy(), s.cls.cpu().numpy()], axis=1))
            per_layer = np.stack(per_layer, axis=2)  # (B, 3, L+1)
            for b, i in enumerate(chunk):
                sims[i].add(per_layer[b])
                rates[i][-1]["final_similarity"] = float(per_layer[b, 0, -1])
                rates[i][-1]["min_similarity"] = float(per_layer[b, 0, 1:].min())
                bar.update()
            del trace
    bar.close()
    measured = d_avg.mean.tolist() if measure else None
    split = resolve_stages(stages, L, measured)
    points = []
    for i, (codec, q) in enumerate(keys):
        mean, std = sims[i].mean, sims[i].std
        inf = [r["psnr"] for r in rates[i]]
        points.append(CodecPoint(
            codec=codec.name, quality=q,
            bpp=float(np.mean([r["bpp"] for r in rates[i]])),
            psnr=float(np.mean(np.minimum(inf, 100.0))),  # identical images (inf dB) count as 100 dB
            similarity=mean[0].tolist(), similarity_std=std[0].tolist(),
            patch_similarity=mean[1].tolist(), cls_similarity=mean[2].tolist(), per_image=rates[i],
        ))
    layer_labels = ["emb"] + [str(l) for l in range(L)]
    return SimilarityReport(encoder.describe(), names, layer_labels, split, points, measured)


def _colors(points: Sequence[CodecPoint]) -> list:
    from matplotlib import colormaps

    maps = ["Blues", "Greens", "Oranges", "Purples", "Reds", "Greys"]
    codecs = list(dict.fromkeys(p.codec for p in points))
    out = []
    for p in points:
        same = sorted({q.quality for q in points if q.codec == p.codec})
        rank = same.index(p.quality)
        shade = 0.45 + 0.5 * (rank / max(len(same) - 1, 1))
        out.append(colormaps[maps[codecs.index(p.codec) % len(maps)]](shade))
    return out


def plot_similarity(report: SimilarityReport, path: str | Path, title: str = "") -> Path:
    """Fig. 5(c)-style figure: token similarity per layer for every codec/quality, stages shaded.

    Left: mean cosine similarity (x = emb, 0..L−1). Right: the same loss 1 − s divided by its
    maximum over the blocks, so curves of different qualities share one scale and the layer
    where each loses most stands out.
    """
    L = len(report.layer_labels) - 1
    x = np.arange(-1, L)
    fig = new_figure(12, 4.2)
    colors = _colors(report.points)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (ax1, ax2):
        shade_stages(ax, report.stages, labels=ax is ax1)
    for p, c in zip(report.points, colors):
        s = np.asarray(p.similarity, dtype=float)
        ax1.plot(x, s, "o-", ms=3, lw=1.4, color=c, label=f"{p.label} ({p.bpp:.2f} bpp, {p.psnr:.1f} dB)")
        loss = 1.0 - s[1:]
        top = np.nanmax(loss) if np.isfinite(loss).any() else 0.0
        ax2.plot(x[1:], loss / top if top > 0 else loss, "o-", ms=3, lw=1.4, color=c)
    ax1.set_ylabel("cosine similarity to the original's tokens")
    ax2.set_ylabel("(1 − similarity) / max over layers")
    for ax in (ax1, ax2):
        ax.set_xlabel("layer (emb = embeddings)")
        ticks = x if L <= 24 else x[::2]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["emb" if t < 0 else str(t) for t in ticks], fontsize=7)
        ax.grid(True, alpha=0.25)
    handles, labels = ax1.get_legend_handles_labels()
    legend_rows = math.ceil(len(labels) / 4)
    fig.set_size_inches(12, 4.2 + 0.22 * legend_rows)
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4, frameon=False)  # below: hides no curve
    ax1.set_title("token similarity, original vs compressed", fontsize=9)
    ax2.set_title("relative loss per layer (shape of the damage)", fontsize=9)
    s = report.stages
    fig.suptitle(title or f"{report.model['model']}: {len(report.images)} images; stages ({s.method}) 1=[0,{s.stage2_start}) "
                 f"2=[{s.stage2_start},{s.stage3_start}) 3=[{s.stage3_start},{L})", fontsize=9)
    fig.tight_layout(rect=(0, min(0.4, 0.045 * legend_rows + 0.01), 1, 1))
    return save_figure(fig, path)
