"""The metrics of CoTAM §2.2 on plain tensors: attention distance, information flow, token similarity.

Everything here is a pure function of attention maps or hidden states, so it can be
checked on hand-built tensors. Conventions (those of transformers' eager attention):

* ``attn[b, h, i, j]`` is the softmax weight query token ``i`` puts on key token ``j``
  (every row sums to 1); token ``i``'s output is Σ_j A_ij v_j, so information flows
  **from j into i**.
* Tokens are ordered ``[CLS]?, registers…, patches`` with the patches row-major on a
  ``gh × gw`` grid (:class:`TokenLayout`). SigLIP has no [CLS]; DINOv2-with-registers has
  register tokens after [CLS].
* Distances are Euclidean between patch-grid centres, in **patch units** (multiply by
  the patch size for pixels of the encoder input).

Paper formulas (§2.2.1), for a layer's attention map A (N × N, N patch tokens)::

    D_avg  = 1/N Σ_i Σ_j Ã_ij · d(p_i, p_j)        Ã: A restricted to patch→patch, rows renormalised
    D_top1 = 1/N Σ_i d(p_i, p_{argmax_j A_ij})      argmax over patch keys
    Inflow(k)  = argmax_j A_kj                      the token k receives most from
    Outflow(k) = argmax_i A_ik                      the token that takes most from k

[CLS] and register tokens are neither queries nor keys in D_avg / D_top1 (the ViT
"mean attention distance" convention: they have no position): each patch query's
attention over the patch keys is renormalised to sum to 1. The flow metrics keep every
token, because where the [CLS] token sits in the flow is part of the finding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "TokenLayout",
    "AttentionDistance",
    "InformationFlow",
    "FlowStatistics",
    "TokenSimilarity",
    "PCABasis",
    "StageSplit",
    "patch_distance_matrix",
    "attention_distance",
    "mean_pairwise_distance",
    "information_flow",
    "flow_statistics",
    "cls_attention",
    "token_similarity",
    "pca_rgb",
    "stage_boundaries",
    "stages_by_thirds",
    "FLOW_STAT_NAMES",
]


# ----------------------------------------------------------------------------- token layout
@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens are in an encoder's token sequence.

    Args:
        grid: (gh, gw) patch grid of the input.
        has_cls: whether token 0 is a [CLS] token (False for SigLIP).
        num_registers: register tokens after [CLS] (DINOv2 with registers), skipped as patches.
    """

    grid: tuple[int, int]
    has_cls: bool = True
    num_registers: int = 0

    def __post_init__(self) -> None:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"patch grid must be two positive sides, got {self.grid}")
        if self.num_registers < 0:
            raise ConfigError(f"num_registers must be >= 0, got {self.num_registers}")

    @property
    def num_prefix(self) -> int:
        """Non-patch tokens before the patches ([CLS] and registers)."""
        return int(self.has_cls) + self.num_registers

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    def check(self, tokens: int, what: str = "attention") -> None:
        if tokens != self.num_tokens:
            raise ConfigError(
                f"{what} has {tokens} tokens, the layout expects {self.num_tokens} "
                f"({self.num_prefix} prefix + {self.grid[0]}×{self.grid[1]} patches)"
            )

    def patch_coords(self, device: torch.device | str | None = None) -> Tensor:
        """(P, 2) float (row, col) of every patch, row-major."""
        gh, gw = self.grid
        rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
        return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()


def patch_distance_matrix(layout: TokenLayout, device: torch.device | str | None = None) -> Tensor:
    """(P, P) float32 Euclidean distances between patch centres, in patch units."""
    xy = layout.patch_coords(device)
    return torch.cdist(xy, xy)


def mean_pairwise_distance(grid: tuple[int, int]) -> float:
    """D_avg of uniform patch→patch attention: the mean distance over all (i, j) pairs, self included."""
    return float(patch_distance_matrix(TokenLayout(tuple(grid), has_cls=False)).double().mean())


# ----------------------------------------------------------------------------- attention distance
@dataclass
class AttentionDistance:
    """Attention distances of one layer for a batch.

    Attributes:
        d_avg: (B,) D_avg of the layer's attention averaged over heads (the paper's one map per layer).
        d_top1: (B,) D_top1 of the same head-averaged map.
        d_avg_heads: (B, H) D_avg of each head (the ViT paper's per-head "mean attention distance").
        d_top1_heads: (B, H) D_top1 of each head.
    """

    d_avg: Tensor
    d_top1: Tensor
    d_avg_heads: Tensor
    d_top1_heads: Tensor


def _patch_distances(attn: Tensor, layout: TokenLayout, dist: Tensor) -> tuple[Tensor, Tensor]:
    """(…, T, T) attention → (…,) D_avg and D_top1 over the patch queries."""
    p = layout.num_prefix
    a = attn[..., p:, p:].float()  # (…, P, P) patch → patch
    norm = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    d_avg = (norm * dist).sum(dim=-1).mean(dim=-1)
    top = a.argmax(dim=-1)  # (…, P) most attended patch of every patch query
    rows = torch.arange(layout.num_patches, device=attn.device)
    d_top1 = dist[rows, top].mean(dim=-1)
    return d_avg, d_top1


def attention_distance(attn: Tensor, layout: TokenLayout, dist: Tensor | None = None) -> AttentionDistance:
    """D_avg and D_top1 (CoTAM §2.2.1) of one layer, per head and for the head-averaged map.

    Args:
        attn: (B, H, T, T) attention weights of one layer (rows are queries), T = layout.num_tokens.
        layout: where the patches are; [CLS]/register rows and columns are dropped and every
            patch row is renormalised over the patch keys before D_avg.
        dist: optional precomputed :func:`patch_distance_matrix` (P, P).

    Returns:
        :class:`AttentionDistance` with (B,) and (B, H) tensors, in patch units.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ConfigError(f"attention must be (B, H, T, T), got {tuple(attn.shape)}")
    layout.check(attn.shape[-1])
    dist = patch_distance_matrix(layout, attn.device) if dist is None else dist.to(attn.device)
    d_avg_heads, d_top1_heads = _patch_distances(attn, layout, dist)
    d_avg, d_top1 = _patch_distances(attn.float().mean(dim=1), layout, dist)
    return AttentionDistance(d_avg=d_avg, d_top1=d_top1, d_avg_heads=d_avg_heads, d_top1_heads=d_top1_heads)


# ----------------------------------------------------------------------------- information flow
@dataclass
class InformationFlow:
    """Argmax information pathways of one layer (head-averaged attention).

    Attributes:
        inflow: (B, T) long, ``inflow[b, k] = argmax_j A[b, k, j]``: the token k takes most from.
        outflow: (B, T) long, ``outflow[b, k] = argmax_i A[b, i, k]``: the token that takes most from k.
    """

    inflow: Tensor
    outflow: Tensor


def information_flow(attn: Tensor) -> InformationFlow:
    """Inflow/Outflow of CoTAM §2.2.1 over all tokens.

    Args:
        attn: (B, H, T, T) (averaged over heads first) or (B, T, T).
    """
    if attn.dim() == 4:
        attn = attn.float().mean(dim=1)
    if attn.dim() != 3 or attn.shape[-1] != attn.shape[-2]:
        raise ConfigError(f"attention must be (B, H, T, T) or (B, T, T), got {tuple(attn.shape)}")
    return InformationFlow(inflow=attn.argmax(dim=-1), outflow=attn.argmax(dim=-2))


#: Per-layer flow statistics, in the order :func:`flow_statistics` returns them.
FLOW_STAT_NAMES = (
    "inflow_to_cls",
    "inflow_to_registers",
    "inflow_to_self",
    "inflow_distance",
    "inflow_top5_share",
    "outflow_to_cls",
    "outflow_to_registers",
    "outflow_to_self",
    "outflow_distance",
)


@dataclass
class FlowStatistics:
    """Summary of one layer's flow over the patch tokens k, each a (B,) float tensor.

    Attributes:
        inflow_to_cls: share of patches whose Inflow is [CLS] (NaN without [CLS]).
        inflow_to_registers: share whose Inflow is a register token.
        inflow_to_self: share whose Inflow is the patch itself.
        inflow_distance: mean distance (patch units) from k to its Inflow, over patches whose
            Inflow is a patch (self counts as 0); NaN when none is.
        inflow_top5_share: among those, the share going to the 5 most popular patch sources:
            high when a few "summary tokens" feed everyone.
        outflow_to_cls, outflow_to_registers, outflow_to_self, outflow_distance: the same
            for Outflow (the query that takes most from k).
    """

    inflow_to_cls: Tensor
    inflow_to_registers: Tensor
    inflow_to_self: Tensor
    inflow_distance: Tensor
    inflow_top5_share: Tensor
    outflow_to_cls: Tensor
    outflow_to_registers: Tensor
    outflow_to_self: Tensor
    outflow_distance: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in FLOW_STAT_NAMES}


def _target_stats(target: Tensor, layout: TokenLayout, dist: Tensor) -> tuple[Tensor, ...]:
    """target (B, P): token index each patch points to → (cls, registers, self, distance, top5) shares."""
    p, P = layout.num_prefix, layout.num_patches
    B = target.shape[0]
    nan = torch.full((B,), math.nan)
    cls = (target == 0).float().mean(dim=1) if layout.has_cls else nan.clone()
    reg_lo = int(layout.has_cls)
    registers = ((target >= reg_lo) & (target < p)).float().mean(dim=1)
    own = torch.arange(P, device=target.device) + p
    self_share = (target == own).float().mean(dim=1)
    is_patch = target >= p
    tgt = (target - p).clamp_min(0)
    d = dist[torch.arange(P, device=target.device), tgt]  # (B, P)
    count = is_patch.sum(dim=1)
    distance = torch.where(count > 0, (d * is_patch).sum(dim=1) / count.clamp_min(1), nan.to(d.device))
    top5 = torch.full((B,), math.nan)
    for b in range(B):
        if count[b] > 0:
            hist = torch.bincount(tgt[b][is_patch[b]], minlength=P)
            top5[b] = hist.topk(min(5, P)).values.sum().float() / count[b].float()
    return cls.cpu(), registers.cpu(), self_share.cpu(), distance.cpu(), top5


def flow_statistics(flow: InformationFlow, layout: TokenLayout, dist: Tensor | None = None) -> FlowStatistics:
    """Per-image statistics (see :class:`FlowStatistics`) of one layer's Inflow/Outflow over the patches.

    Args:
        flow: from :func:`information_flow`, (B, T) indices.
        layout: the token layout ([CLS] and registers are targets like any other token).
    """
    layout.check(flow.inflow.shape[-1], "flow")
    dist = patch_distance_matrix(layout, flow.inflow.device) if dist is None else dist.to(flow.inflow.device)
    p = layout.num_prefix
    i_cls, i_reg, i_self, i_dist, i_top5 = _target_stats(flow.inflow[:, p:], layout, dist)
    o_cls, o_reg, o_self, o_dist, _ = _target_stats(flow.outflow[:, p:], layout, dist)
    return FlowStatistics(
        inflow_to_cls=i_cls, inflow_to_registers=i_reg, inflow_to_self=i_self, inflow_distance=i_dist,
        inflow_top5_share=i_top5, outflow_to_cls=o_cls, outflow_to_registers=o_reg, outflow_to_self=o_self,
        outflow_distance=o_dist,
    )


# ----------------------------------------------------------------------------- [CLS] attention
def cls_attention(attn: Tensor, layout: TokenLayout) -> Tensor:
    """[CLS]→patch attention of one layer, averaged over heads and renormalised over the patches.

    Encoders without [CLS] (SigLIP) use instead the attention each patch *receives*,
    averaged over all patch queries: the same stand-in the guidance uses, and the
    token mix SigLIP's attention-pooling head starts from.

    Args:
        attn: (B, H, T, T) or (B, T, T).

    Returns:
        (B, gh, gw), every map summing to 1.
    """
    if attn.dim() == 4:
        attn = attn.float().mean(dim=1)
    layout.check(attn.shape[-1])
    p = layout.num_prefix
    scores = attn[:, 0, p:] if layout.has_cls else attn[:, p:, p:].mean(dim=1)
    scores = scores / scores.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return scores.reshape(-1, *layout.grid)


# ----------------------------------------------------------------------------- token similarity
@dataclass
class TokenSimilarity:
    """Cosine similarity between the tokens of two hidden states, for a batch.

    Attributes:
        tokens: (B,) mean over all tokens ([CLS], registers and patches): the paper's "feature tokens".
        patches: (B,) mean over the patch tokens only.
        cls: (B,) the [CLS] token's similarity (NaN without [CLS]).
        per_patch: (B, gh, gw) similarity of every patch token.
    """

    tokens: Tensor
    patches: Tensor
    cls: Tensor
    per_patch: Tensor


def token_similarity(reference: Tensor, other: Tensor, layout: TokenLayout) -> TokenSimilarity:
    """Token-wise cosine similarity of two hidden states (identical tokens count 1, even all-zero ones).

    Args:
        reference, other: (B, T, D) hidden states of one layer (e.g. original vs compressed image).
    """
    if reference.shape != other.shape or reference.dim() != 3:
        raise ConfigError(f"hidden states must both be (B, T, D), got {tuple(reference.shape)} and {tuple(other.shape)}")
    layout.check(reference.shape[1], "hidden state")
    a, b = reference.float(), other.float()
    cos = F.cosine_similarity(a, b, dim=-1, eps=1e-8)  # (B, T)
    cos = torch.where((a == b).all(dim=-1), torch.ones_like(cos), cos)  # identical (even all-zero) tokens: 1
    p = layout.num_prefix
    cls = cos[:, 0] if layout.has_cls else torch.full((cos.shape[0],), math.nan)
    return TokenSimilarity(
        tokens=cos.mean(dim=1), patches=cos[:, p:].mean(dim=1), cls=cls, per_patch=cos[:, p:].reshape(-1, *layout.grid)
    )


# ----------------------------------------------------------------------------- PCA features
@dataclass
class PCABasis:
    """A 3-component PCA of tokens and the value ranges that map them to [0, 1] RGB.

    Attributes:
        mean: (D,) token mean. components: (3, D) unit principal axes (sign fixed so the
        largest loading is positive). low, high: (3,) 1st / 99th percentiles of the
        projections of the fitted tokens.
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor

    def project(self, tokens: Tensor) -> Tensor:
        """(N, D) tokens → (N, 3) RGB in [0, 1]."""
        proj = (tokens.float() - self.mean) @ self.components.T
        return ((proj - self.low) / (self.high - self.low).clamp_min(1e-12)).clamp(0.0, 1.0)


def pca_rgb(tokens: Tensor, basis: PCABasis | None = None) -> tuple[Tensor, PCABasis]:
    """PCA feature image: the first 3 principal components of patch tokens as RGB (Fig. 4 / Fig. 25).

    Args:
        tokens: (N, D) patch tokens of one image and layer.
        basis: reuse another image's basis (e.g. the original's for the compressed image, so
            colours are comparable); None fits one on ``tokens``.

    Returns:
        ((N, 3) values in [0, 1], the basis used). With fewer than 3 usable components the
        missing channels are 0.5.
    """
    if tokens.dim() != 2:
        raise ConfigError(f"tokens must be (N, D), got {tuple(tokens.shape)}")
    x = tokens.float()
    if basis is None:
        mean = x.mean(dim=0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        comps = torch.zeros(3, x.shape[1])
        k = min(3, vh.shape[0])
        comps[:k] = vh[:k]
        signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True))).squeeze(1)
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        proj = (x - mean) @ comps.T
        low = torch.quantile(proj, 0.01, dim=0)
        high = torch.quantile(proj, 0.99, dim=0)
        flat = (high - low) <= 1e-12
        low = torch.where(flat, low - 1.0, low)
        high = torch.where(flat, high + 1.0, high)
        basis = PCABasis(mean=mean, components=comps, low=low, high=high)
    return basis.project(x), basis


# ----------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class StageSplit:
    """The three stages over L layers (0-based block indices).

    Stage 1 = [0, stage2_start), stage 2 = [stage2_start, stage3_start), stage 3 = [stage3_start, L).

    Attributes:
        method: how the split was chosen ("user", "thirds", "attention-distance U-shape").
        note: why (e.g. why the U-shape heuristic fell back to thirds).
    """

    num_layers: int
    stage2_start: int
    stage3_start: int
    method: str = "user"
    note: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.stage2_start < self.stage3_start < self.num_layers:
            raise ConfigError(
                f"stage boundaries need 0 < stage2_start < stage3_start < {self.num_layers} layers, "
                f"got {self.stage2_start}, {self.stage3_start}"
            )

    def stage_of(self, layer: int) -> int:
        """1, 2 or 3 for a 0-based block index."""
        return 1 if layer < self.stage2_start else 2 if layer < self.stage3_start else 3

    def ranges(self) -> list[tuple[int, int]]:
        """[(start, stop)] of the three stages (stop exclusive)."""
        return [(0, self.stage2_start), (self.stage2_start, self.stage3_start), (self.stage3_start, self.num_layers)]


def stages_by_thirds(num_layers: int, note: str = "") -> StageSplit:
    """Equal thirds: stage 2 from round(L/3), stage 3 from round(2L/3) (needs L ≥ 3)."""
    if num_layers < 3:
        raise ConfigError(f"three stages need at least 3 layers, got {num_layers}")
    s2 = max(1, round(num_layers / 3))
    s3 = min(num_layers - 1, max(s2 + 1, round(2 * num_layers / 3)))
    return StageSplit(num_layers, s2, s3, "thirds", note)


def stage_boundaries(d_avg: Sequence[float], min_rise: float = 0.1) -> StageSplit:
    """Stages from the U-shape of the per-layer attention distance (paper Fig. 5a), else thirds.

    Heuristic (half-height crossings of the U's two arms): let m = argmin D_avg. Stage 2
    starts where D_avg has fallen for good below the midpoint between the left arm's peak and
    the minimum (the first layer after that peak from which every layer up to m is below it);
    stage 3 starts where it has risen for good above the midpoint between the minimum and the
    right arm's peak (the first layer after m from which every layer up to that peak is above). If the
    minimum is at either end, or either arm rises less than ``min_rise`` × (max − min),
    the curve is not U-shaped and the split falls back to :func:`stages_by_thirds`
    (``note`` says so).

    Args:
        d_avg: (L,) per-layer D_avg.
    """
    d = np.asarray(list(d_avg), dtype=np.float64)
    L = d.size
    if not np.all(np.isfinite(d)):
        return stages_by_thirds(L, "no U-shape: the attention distance has non-finite values")
    if L < 3:
        return stages_by_thirds(L)  # raises: three stages need three layers
    m = int(np.argmin(d))
    span = float(d.max() - d.min())
    if m == 0 or m == L - 1 or span <= 0:
        return stages_by_thirds(L, f"no U-shape: D_avg is lowest at layer {m}")
    left_peak = int(np.argmax(d[: m + 1]))
    right_peak = m + int(np.argmax(d[m:]))
    left_rise, right_rise = d[left_peak] - d[m], d[right_peak] - d[m]
    if left_rise < min_rise * span or right_rise < min_rise * span:
        return stages_by_thirds(
            L, f"no U-shape: an arm rises less than {min_rise:.0%} of the range "
               f"(left {left_rise:.3f}, right {right_rise:.3f}, range {span:.3f})"
        )
    # sustained crossings: every layer from s2 to m is below the left midpoint, every layer from s3 to
    # the right peak above the right one (a single layer grazing a midpoint does not move a boundary)
    below, above = d <= d[m] + 0.5 * left_rise, d >= d[m] + 0.5 * right_rise
    s2 = next(i for i in range(left_peak + 1, m + 1) if below[i : m + 1].all())
    s3 = next(i for i in range(m + 1, right_peak + 1) if above[i : right_peak + 1].all())
    return StageSplit(L, s2, s3, "attention-distance U-shape", f"D_avg minimum at layer {m}")
