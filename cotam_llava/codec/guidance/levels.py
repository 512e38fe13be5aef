"""From a continuous importance map to quality levels (CoTAM §3.2, appendix A.6).

::

    map (Hp, Wp) ─pool─▶ (G, G) ─μ ± kσ thresholds─▶ levels {0 … L−1} ─base + (level − c)·step─▶ QualityMap

With L = 3 (the paper's default) the thresholds are μ − kσ and μ + kσ, so the levels
mean decrease / keep / increase. For other L the L − 1 thresholds are spread evenly
over [μ − kσ, μ + kσ]; the centre level c = (L − 1)/2 keeps the base quality.

Rate balance (``rate_ratio``, our option): a quality level up costs more bits than a level down saves (the codec's
rate grows roughly geometrically with the level), so the paper's symmetric thresholds add bits. With a ratio ρ,
the thresholds are shifted up until the map's modelled rate, mean over cells of ρ^quality, is at most the uniform
map's: fewer, more important cells go up, more cells go down, and guidance reallocates bits instead of adding them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError
from ..quality_map import QualityMap

__all__ = ["pool_map", "quantize_levels", "balanced_levels", "levels_to_quality_map", "thresholds"]


def pool_map(importance: Tensor, grid: int | tuple[int, int]) -> Tensor:
    """Average-pool a map (..., H, W) to (..., gh, gw) (adaptive: any H, W)."""
    size = (grid, grid) if isinstance(grid, int) else tuple(grid)
    lead = importance.shape[:-2]
    pooled = F.adaptive_avg_pool2d(importance.reshape(-1, 1, *importance.shape[-2:]).float(), size)
    return pooled.reshape(*lead, *size)


def thresholds(importance: Tensor, num_levels: int = 3, k: float = 0.75) -> Tensor:
    """The L − 1 thresholds of one map (any shape): evenly spread over μ ± kσ."""
    if num_levels < 2:
        raise ConfigError(f"num_levels must be ≥ 2, got {num_levels}")
    mu, sigma = importance.float().mean(), importance.float().std(unbiased=False)
    if num_levels == 2:
        return mu.reshape(1)
    u = torch.linspace(-1.0, 1.0, num_levels - 1)
    return mu + k * sigma * u


def quantize_levels(importance: Tensor, num_levels: int = 3, k: float = 0.75) -> Tensor:
    """Levels of one map (any shape) by its own μ ± kσ thresholds.

    Returns:
        long tensor of the map's shape, values in [0, num_levels − 1]; a uniform map gets
        the centre level everywhere.
    """
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    if float(importance.float().std(unbiased=False)) == 0.0:
        return torch.full(importance.shape, (num_levels - 1) // 2, dtype=torch.long)
    t = thresholds(importance, num_levels, k)
    # level = number of thresholds strictly below the value (ties go to the lower level)
    return (importance.float().unsqueeze(-1) > t).sum(-1).long()


def balanced_levels(importance: Tensor, num_levels: int, k: float, base_quality: int, step: int, rate_ratio: float,
                    num_qualities: int = 10) -> Tensor:
    """Levels by μ + δσ ± kσ thresholds, with the smallest δ ≥ 0 whose quality map keeps the modelled rate
    (mean of ``rate_ratio`` ** quality over cells) at most the uniform map's.

    Args:
        importance: one map, any shape (e.g. the pooled (G, G) grid).
        num_levels, k: as in :func:`quantize_levels` (δ = 0 gives its levels).
        base_quality, step, num_qualities: as in :func:`levels_to_quality_map` (clamping counts: at the lowest
            quality no cell can go down, so none goes up).
        rate_ratio: ρ > 1, the modelled rate ratio of neighbouring quality levels.

    Returns:
        long tensor of the map's shape, values in [0, num_levels − 1].
    """
    if rate_ratio <= 1:
        raise ConfigError(f"rate_ratio must be > 1, got {rate_ratio}")
    v = importance.float()
    mu, sigma = v.mean(), v.std(unbiased=False)
    if float(sigma) == 0.0:
        return quantize_levels(importance, num_levels, k)
    centre = (num_levels - 1) // 2
    z = ((v - mu) / sigma).flatten()
    spread = k * torch.linspace(-1.0, 1.0, num_levels - 1) if num_levels > 2 else torch.zeros(1)

    def levels_at(delta: float) -> Tensor:  # level = thresholds strictly below the value, as quantize_levels
        return (z.unsqueeze(-1) > delta + spread).sum(-1)

    def modelled_excess(levels: Tensor) -> float:
        q = (base_quality + (levels - centre) * step).clamp(0, num_qualities - 1).double()
        return float(torch.pow(rate_ratio, q - base_quality).mean()) - 1.0

    # the levels only change where a threshold crosses a cell's value: try δ = 0, then those points upwards
    crossings = torch.unique((z.unsqueeze(-1) - spread).flatten())
    for delta in [0.0, *[float(c) for c in crossings if c > 0]]:
        levels = levels_at(delta)
        if modelled_excess(levels) <= 1e-9:
            break
    return levels.reshape(importance.shape).long()


def levels_to_quality_map(levels: Tensor | np.ndarray, base_quality: int, step: int, num_levels: int,
                          num_qualities: int = 10) -> QualityMap:
    """Per-cell quality: base + (level − centre)·step, clamped to [0, num_qualities − 1].

    Args:
        levels: (gh, gw) ints in [0, num_levels − 1].
        base_quality: the quality of "keep" cells.
        step: quality levels between neighbouring guidance levels (≥ 0).
    """
    lv = np.asarray(levels.cpu() if isinstance(levels, Tensor) else levels, dtype=np.int64)
    if lv.ndim != 2:
        raise ConfigError(f"levels must be a 2-D grid, got shape {lv.shape}")
    if step < 0:
        raise ConfigError(f"step must be ≥ 0, got {step}")
    centre = (num_levels - 1) // 2
    q = np.clip(base_quality + (lv - centre) * step, 0, num_qualities - 1)
    return QualityMap(q)
