"""Quality maps under a rate constraint: spend the base level's bits where they buy the most.

The paper's rule (:func:`~.levels.quantize_levels`) raises the cells above μ + kσ and lowers those below μ − kσ;
it never looks at what the cells cost, so a map usually raises more bits than it saves (issue 19: +1 700 bits per
256² picture on the choose photos). The rules here pick, per cell, one of a few levels around the base so that
the picture's estimated bits stay within the uniform file's, and the chosen distortion is smallest::

    picture ─codec, one eval pass per candidate level─▶ per cell: bits b[l, c], reconstruction x̂_l
            ─distortion model─▶ d[l, c]
            ─min Σ d[l_c, c]  s.t.  Σ b[l_c, c] + map bits ≤ Σ b[base, c]  (Lagrangian, then greedy fill)─▶ levels

Two distortion models (``eval/guidance_allocation.py`` compares them; the product's ``allocation="host"`` rule,
:mod:`.host`, uses the second):

- weighted MSE: the guidance importance as a weight on each cell's pixel MSE, ``w_c = (m_c / mean m)^γ``
  (γ = 0: plain MSE, i.e. what the codec already balances; larger γ: follow the attention map harder).
- host error: the host encoder's own final-token error when only cell c is taken from x̂_l (the rest from the base
  reconstruction): what the MLLM's tokens lose, cell by cell. Needs the whole host vision encoder at the edge.

The estimate is additive across cells; ``eval/guidance_anatomy.py`` measured that a cell's bits and PSNR inside
a mixed map are within 1–2 % and 0.1 dB of the same cell in a uniform file, which is what makes it hold.

A standard base (hevc) has no entropy model to ask, so :func:`probe_standard` measures instead: one real encode per
cell and candidate level with only that cell moved (its QP offset), whose file size gives the cell's bits and whose
decoded picture is what the host judges — intra prediction and CABAC make cells interact, which the real-file check
of :func:`rate_matched_map` absorbs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError
from ..loading import is_standard_codec
from ..quality_map import QualityMap

__all__ = ["CellProbe", "CodedPicture", "probe_levels", "probe_standard", "allocate", "weighted_mse_distortion", "host_distortion",
           "cell_index", "host_gradient_distortion", "change_penalties", "map_side_bits", "rate_matched_map"]


def cell_index(h: int, w: int, grid: tuple[int, int]) -> np.ndarray:
    """(h, w) cell number of every latent position, by :meth:`QualityMap.expand`'s integer rule (row-major)."""
    gh, gw = grid
    rows = (np.arange(h) * gh) // h
    cols = (np.arange(w) * gw) // w
    return rows[:, None] * gw + cols[None, :]


def map_side_bits(num_cells: int, num_levels: int) -> int:
    """Bits a quality map of ``num_cells`` cells and ``num_levels`` distinct levels adds to an item, as
    :meth:`QualityMap.to_bytes` writes it (3 bytes of sizes, 4-bit qualities, ⌈log2 L⌉ bits per cell, whole bytes)."""
    if num_levels <= 1:
        return 0
    return 8 * (3 + (4 * num_levels + 7) // 8 + (num_cells * math.ceil(math.log2(num_levels)) + 7) // 8)


@dataclass
class CellProbe:
    """What a picture costs and looks like, cell by cell, at each candidate level.

    Attributes:
        levels: the candidate quality levels, ascending (L,).
        grid: (gh, gw) cells.
        bits: (L, gh·gw) estimated bits of each cell at each level (ŷ and the ẑ share, from the entropy model).
        mse: (L, gh·gw) pixel MSE of each cell (on [0, 1] pixels) at each level.
        recon: (L, 3, H, W) the reconstructions, clamped to [0, 1].
        pixel_cells: (H, W) cell number of each pixel.
        latents: (L, M, H/16, W/16) the rounded ŷ of each level (what the adapter reads in the cloud).
        cell_recon: (L, C, 3, H, W) uint8, for a standard base: the real decoded picture with only cell c at level
            l (the rest at the base level); :meth:`splice` returns it instead of pasting pixels.
    """

    levels: list[int]
    grid: tuple[int, int]
    bits: np.ndarray
    mse: np.ndarray
    recon: Tensor
    pixel_cells: np.ndarray
    latents: Tensor | None = None
    cell_recon: Tensor | None = None

    def bits_at(self, choice: np.ndarray) -> float:
        """Estimated payload bits of a choice (index into ``levels`` per cell)."""
        return float(self.bits[choice, np.arange(choice.size)].sum())

    def splice(self, base: int, cell: int, level: int) -> Tensor:
        """The base reconstruction with one cell's pixels from ``level``'s (indices into ``levels``)."""
        if self.cell_recon is not None and level != base:
            return self.cell_recon[level, cell].float() / 255
        mask = torch.from_numpy(self.pixel_cells == cell).to(self.recon.device)
        return torch.where(mask, self.recon[level], self.recon[base])

    def splice_coded(self, base: int, cell: int, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """What the cloud decodes when only ``cell`` is at ``level``: (x̂ (3, H, W), ŷ (M, h, w), levels (h, w))."""
        if self.latents is None:
            raise ConfigError("this probe has no latents (a standard base): judge the host's tokens, not the cloud's")
        latent_cells = torch.from_numpy(self.pixel_cells[::16, ::16] == cell)
        levels = torch.where(latent_cells, self.levels[level], self.levels[base]).long()
        y = torch.where(latent_cells.to(self.latents.device), self.latents[level], self.latents[base])
        return self.splice(base, cell, level), y, levels


@torch.no_grad()
def probe_levels(codec, x: Tensor, levels: Sequence[int], grid: tuple[int, int]) -> CellProbe:
    """One rounding (eval) pass of ``codec`` per level over the canvas picture ``x`` (1, 3, H, W) in [0, 1].

    The eval pass rounds ŷ as the encoder does and gives the entropy model's likelihoods; no rANS coding.
    """
    levels = sorted({int(q) for q in levels})
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    latent_cells = torch.from_numpy(cell_index(h, w, grid).reshape(-1))
    n = grid[0] * grid[1]
    pixel_cells = np.repeat(np.repeat(cell_index(h, w, grid), 16, 0), 16, 1)
    pix = torch.from_numpy(pixel_cells.reshape(-1))
    was_training = codec.training
    codec.eval()
    bits, mse, recon, latents = [], [], [], []
    try:
        for q in levels:
            out = codec(x, q)
            latents.append(out.y_hat[0, :, :h, :w])
            lk = out.likelihoods
            y_bits = -(lk["y"].clamp_min(1e-9).log2()).sum(dim=1)[0]  # (h, w)
            z_bits = -(lk["z"].clamp_min(1e-9).log2()).sum(dim=1, keepdim=True)
            pos = y_bits + F.interpolate(z_bits / 16.0, size=(h, w), mode="nearest")[0, 0]
            bits.append(torch.zeros(n, dtype=torch.float64).index_add_(0, latent_cells, pos.reshape(-1).double().cpu()))
            xh = out.x_hat.clamp(0, 1)
            err = (xh - x).pow(2).mean(dim=1)[0].reshape(-1).double().cpu()
            counts = torch.bincount(pix, minlength=n).double()
            mse.append(torch.zeros(n, dtype=torch.float64).index_add_(0, pix, err) / counts)
            recon.append(xh[0])
    finally:
        codec.train(was_training)
    return CellProbe(levels=levels, grid=tuple(grid), bits=torch.stack(bits).numpy(), mse=torch.stack(mse).numpy(),
                     recon=torch.stack(recon), pixel_cells=pixel_cells, latents=torch.stack(latents))


def _canvas_uint8(x: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] → (H, W, 3) uint8 (exact for pictures that came from uint8 pixels)."""
    return x[0].detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


@torch.no_grad()
def probe_standard(codec, x: Tensor, levels: Sequence[int], grid: tuple[int, int], base_quality: int) -> CellProbe:
    """Real encodes of a standard base (``StandardCodec`` with per-region quality) of the canvas picture ``x``.

    Per candidate level l: the uniform picture at l (``recon``, ``mse``), and for l ≠ base each cell c alone at l in
    a base-level picture: its file gives ``bits[l, c]`` = 8·(its bytes − the uniform base file's) + the base file's
    bits / C (so a uniform choice sums to the base file), its decode ``cell_recon[l, c]``. 1 + (L − 1)·(C + 1) encodes.
    """
    levels = sorted({int(q) for q in levels})
    base = levels.index(int(base_quality))
    rgb = _canvas_uint8(x)
    h, w = rgb.shape[0] // 16, rgb.shape[1] // 16
    cells = cell_index(h, w, grid)
    n = grid[0] * grid[1]
    block_cells = np.arange(n).reshape(grid)
    pixel_cells = np.repeat(np.repeat(cells, 16, 0), 16, 1)
    pix = torch.from_numpy(pixel_cells.reshape(-1))
    counts = torch.bincount(pix, minlength=n).double()

    def code(quality: int, qmap: QualityMap | None = None) -> tuple[int, Tensor]:
        item, out = codec.roundtrip(rgb, quality, qmap)
        return len(item.streams[0]), torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)

    uniform = [code(q) for q in levels]
    base_bytes = uniform[base][0]
    share = 8.0 * base_bytes / n
    bits = np.full((len(levels), n), share)
    cell_recon = torch.empty((len(levels), n, *uniform[base][1].shape), dtype=torch.uint8)
    for l, q in enumerate(levels):
        if l == base:
            cell_recon[l] = uniform[base][1]
            continue
        for c in range(n):
            size, out = code(int(base_quality), QualityMap(np.where(block_cells == c, q, int(base_quality)).astype(np.int64)))
            bits[l, c] = share + 8.0 * (size - base_bytes)
            cell_recon[l, c] = out
    recon = torch.stack([u[1] for u in uniform]).float() / 255
    target = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    mse = np.stack([(torch.zeros(n, dtype=torch.float64).index_add_(
        0, pix, (r - target).pow(2).mean(dim=0).reshape(-1).double()) / counts).numpy() for r in recon])
    return CellProbe(levels=levels, grid=tuple(grid), bits=bits, mse=mse, recon=recon, pixel_cells=pixel_cells,
                     cell_recon=cell_recon)


def weighted_mse_distortion(probe: CellProbe, importance: Tensor | np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """(L, C) distortion: each cell's MSE weighted by ``(importance / its mean)^γ`` (importance: (gh, gw), ≥ 0)."""
    m = np.asarray(importance.cpu() if isinstance(importance, Tensor) else importance, dtype=np.float64).reshape(-1)
    if m.size != probe.bits.shape[1]:
        raise ConfigError(f"importance has {m.size} cells, the probe {probe.bits.shape[1]}")
    m = np.clip(m, 0, None)
    weight = (m / m.mean()) ** gamma if m.mean() > 0 else np.ones_like(m)
    return probe.mse * weight[None, :]


@torch.no_grad()
def host_distortion(probe: CellProbe, base: int, token_error: Callable[..., Tensor], batch: int = 32,
                    coded: bool = False) -> np.ndarray:
    """(L, C) distortion: the host's token error with cell c from level l and the rest from level ``base``.

    Args:
        probe: from :func:`probe_levels`.
        base: index into ``probe.levels`` of the base level (its row is the base reconstruction's error).
        token_error: (B, 3, H, W) reconstructions in [0, 1] → (B,) the host's error against the original's tokens;
            with ``coded``, (x̂ (B, 3, H, W), ŷ (B, M, h, w), levels (B, h, w)) → (B,): the error of what the cloud
            makes of the spliced stream (the adapter reads ŷ and the levels).
        batch: reconstructions per host call.
    """
    L, C = probe.bits.shape
    jobs = [(l, c) for l in range(L) if l != base for c in range(C)]
    d = np.empty((L, C))

    def errors(pairs: list[tuple[int, int]]) -> list[float]:
        if not coded:
            return token_error(torch.stack([probe.splice(base, c, l) for l, c in pairs])).tolist()
        parts = [probe.splice_coded(base, c, l) for l, c in pairs]
        return token_error(*(torch.stack(t) for t in zip(*parts))).tolist()

    d[base, :] = errors([(base, 0)])[0]  # cell 0 "at the base level": the base reconstruction itself
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        for (l, c), e in zip(chunk, errors(chunk)):
            d[l, c] = e
    return d


def host_gradient_distortion(probe: CellProbe, base: int, token_error: Callable[[Tensor], Tensor]) -> np.ndarray:
    """(L, C) distortion to first order: E(x̂_base) + Σ over cell c's pixels of ∂E/∂x̂ · (x̂_l − x̂_base).

    One forward and one backward pass of the host instead of :func:`host_distortion`'s 2s·G² forwards.
    ``token_error`` must be differentiable.
    """
    x = probe.recon[base][None].clone().requires_grad_(True)
    with torch.enable_grad():
        e = token_error(x)[0]
        (grad,) = torch.autograd.grad(e, x)
    n = probe.bits.shape[1]
    pix = torch.from_numpy(probe.pixel_cells.reshape(-1))
    d = np.empty(probe.bits.shape)
    for l in range(len(probe.levels)):
        change = (grad[0] * (probe.recon[l] - probe.recon[base])).sum(dim=0).reshape(-1).double().cpu()
        d[l] = float(e) + torch.zeros(n, dtype=torch.float64).index_add_(0, pix, change).numpy()
    return d


def allocate(bits: np.ndarray, distortion: np.ndarray, budget: float, fallback: np.ndarray | None = None,
             iterations: int = 60) -> np.ndarray:
    """Per cell, the option (row) minimising total distortion with total bits ≤ ``budget``.

    A multiple-choice knapsack, solved as rate-distortion allocation: bisect the Lagrange multiplier λ for the
    smallest total distortion Σ d + λ·b whose bits fit, then spend what is left greedily on the upgrades with the
    most distortion removed per bit. Where even the cheapest options overflow the budget, they are returned.

    Args:
        bits: (L, C) bits of option l in cell c.
        distortion: (L, C) distortion of option l in cell c.
        budget: the most total bits.
        fallback: (C,) a choice to return instead when it fits the budget with no more distortion (the uniform
            map: a rate-matched map is then never worse than coding uniformly, by the model's numbers).

    Returns:
        (C,) option index per cell.
    """
    bits, distortion = np.asarray(bits, np.float64), np.asarray(distortion, np.float64)
    if bits.shape != distortion.shape or bits.ndim != 2:
        raise ConfigError(f"bits {bits.shape} and distortion {distortion.shape} must both be (options, cells)")
    cols = np.arange(bits.shape[1])

    def pick(lam: float) -> np.ndarray:
        cost = distortion + lam * bits
        best = cost.min(axis=0, keepdims=True)
        # among ties, the cheapest in bits (so λ → ∞ gives the cheapest option everywhere)
        return np.where(cost <= best + 1e-15 * np.abs(best), bits, np.inf).argmin(axis=0)

    def total(choice: np.ndarray) -> float:
        return float(bits[choice, cols].sum())

    choice = pick(0.0)
    if total(choice) > budget:
        lo, hi = 0.0, 1.0
        while total(pick(hi)) > budget and hi < 1e30:
            lo, hi = hi, hi * 16
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if total(pick(mid)) > budget else (lo, mid)
        choice = pick(hi)
    # greedy fill: upgrades that fit, most distortion removed per bit first
    while True:
        spare = budget - total(choice)
        d_gain = distortion[choice, cols][None, :] - distortion
        b_cost = bits - bits[choice, cols][None, :]
        ok = (d_gain > 0) & (b_cost <= spare)
        if not ok.any():
            if fallback is not None and total(fallback) <= budget and \
                    distortion[fallback, cols].sum() <= distortion[choice, cols].sum():
                return np.asarray(fallback).copy()
            return choice
        ratio = np.where(ok, d_gain / np.maximum(b_cost, 1e-12), -np.inf)
        l, c = np.unravel_index(int(ratio.argmax()), ratio.shape)
        choice = choice.copy()
        choice[c] = l


@dataclass
class CodedPicture:
    """A real file of the canvas picture and what the cloud decodes from it.

    Attributes:
        nbytes: payload bytes (rANS streams, or the standard codec's picture), without the container or the map.
        x_hat: (3, H, W) the decoded picture in [0, 1].
        y_hat: (M, h, w) the decoded latent (learned codec), or None (a standard base has none).
        levels: (h, w) each latent position's quality level.
    """

    nbytes: int
    x_hat: Tensor | None = None
    y_hat: Tensor | None = None
    levels: Tensor | None = None


def _code(codec, x: Tensor, quality: int, qmap: QualityMap | None = None, decode: bool = False) -> CodedPicture:
    """``x`` coded for real at ``quality`` (or with the map ``qmap``); with ``decode``, also what the decoder makes of it."""
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    level = torch.full((h, w), quality, dtype=torch.long) if qmap is None else \
        torch.from_numpy(qmap.expand(h, w).astype(np.int64))
    if is_standard_codec(codec):
        if not decode:
            return CodedPicture(len(codec.compress_image(_canvas_uint8(x), quality, qmap).streams[0]))
        item, out = codec.roundtrip(_canvas_uint8(x), quality, qmap)
        return CodedPicture(len(item.streams[0]), torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float() / 255,
                            None, level)
    coded = codec.compress(x, quality if qmap is None else level)
    nbytes = sum(len(s) for s in coded.strings)
    if not decode:
        return CodedPicture(nbytes)
    out = codec.decompress(coded.strings, coded.y_shape, quality if qmap is None else level)
    return CodedPicture(nbytes, out.x_hat[0], out.y_hat[0], level)


def change_penalties(d: np.ndarray, base: int, count: int) -> list[float]:
    """``count`` penalties per changed cell for the candidate maps: 0 (the plain allocation), then the quantiles
    1 − 2^-j of the cells' |distortion change| (j = 1 … count − 1): each candidate moves fewer cells, the ones
    whose single-cell measurement is largest — where the additive model is least likely to be wrong."""
    delta = np.abs(np.delete(d, base, axis=0) - d[base][None, :]).reshape(-1)
    return [0.0] + [float(np.quantile(delta, 1 - 0.5 ** j)) for j in range(1, count)]


def rate_matched_map(codec, x: Tensor, base_quality: int, config, distortion_of: Callable[[CellProbe, int], np.ndarray],
                     levels: Sequence[int] | None = None,
                     judge: Callable[[list[CodedPicture]], np.ndarray] | None = None,
                     ) -> tuple[QualityMap | None, CellProbe, np.ndarray]:
    """The map of least ``distortion_of`` whose real file is at most the uniform file's size.

    Allocates on the estimated bits (:func:`allocate`), codes the picture for real, and while the file (streams
    plus the map's bytes) exceeds the uniform one by more than ``config.rate_tolerance``, shrinks the budget by the
    excess and allocates again, ``config.rate_rounds`` times at most; then gives up (None: code uniformly).

    With a ``judge`` the maps are checked on real files, not only on the model's sum of single-cell errors (which
    overestimates what many changed cells gain together, and sometimes is wrong in sign): ``config.candidates``
    maps are made, the first as above and the others with a penalty on every changed cell
    (:func:`change_penalties`), each is coded and decoded for real with the uniform file beside them, and the
    judge's least error wins; the uniform file wins ties (None).

    Args:
        codec: a finalized learned codec, or a standard one with per-region quality (hevc: probed by real encodes,
            :func:`probe_standard`).
        x: the canvas picture (1, 3, H, W) in [0, 1] (H, W multiples of 64).
        base_quality: the uniform level whose bits the map may spend.
        config: a :class:`~.configuration.GuidanceConfig` (grid — at most the latent grid —, spread, rate_tolerance,
            rate_rounds, candidates).
        distortion_of: (probe, index of the base level in ``probe.levels``) → (L, C) distortion.
        levels: candidate levels (default: base ± spread, within the codec's range).
        judge: decoded real files → (N,) their errors (lower is better), e.g. the host's final-token error.

    Returns:
        (the map, or None for a uniform file; the probe; the distortion table).
    """
    standard = is_standard_codec(codec)
    Q = codec.num_qualities if standard else codec.config.num_qualities
    s = config.spread
    levels = sorted(levels or [l for l in range(base_quality - s, base_quality + s + 1) if 0 <= l < Q])
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    grid = (min(config.grid, h), min(config.grid, w))  # a cell is at least one latent position
    probe = probe_standard(codec, x, levels, grid, base_quality) if standard else probe_levels(codec, x, levels, grid)
    base = probe.levels.index(base_quality)
    d = distortion_of(probe, base)
    uniform = _code(codec, x, base_quality, decode=judge is not None)
    side = map_side_bits(grid[0] * grid[1], len(levels))
    changed = (np.arange(len(probe.levels)) != base)[:, None]

    def fit(table: np.ndarray) -> tuple[QualityMap, CodedPicture] | None:
        budget = probe.bits[base].sum() - side
        for _ in range(config.rate_rounds):
            cells = np.asarray(probe.levels)[allocate(probe.bits, table, budget)].reshape(grid)  # uniform never fits: map bytes
            if (cells == base_quality).all():
                return None
            qmap = QualityMap(cells.astype(np.int64))
            coded = _code(codec, x, base_quality, qmap, decode=judge is not None)
            excess = 8 * (coded.nbytes + len(qmap.to_bytes()) - uniform.nbytes)
            if excess <= config.rate_tolerance * 8 * uniform.nbytes:
                return qmap, coded
            budget -= excess
        return None

    penalties = change_penalties(d, base, config.candidates) if judge is not None else [0.0]
    found: list[tuple[QualityMap, CodedPicture]] = []
    for kappa in penalties:
        made = fit(d + kappa * changed)
        if made is not None and not any(np.array_equal(made[0].grid, m.grid) for m, _ in found):
            found.append(made)
    if judge is None or not found:
        return (found[0][0] if found else None), probe, d
    errors = np.asarray(judge([uniform] + [c for _, c in found]), dtype=np.float64)
    best = int(errors[1:].argmin()) + 1
    return (found[best - 1][0] if errors[best] < errors[0] else None), probe, d
