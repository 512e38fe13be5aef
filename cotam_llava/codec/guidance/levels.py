"""From a continuous importance map to quality levels (CoTAM §3.2, appendix A.6).

::

    map (Hp, Wp) ─pool─▶ (G, G) ─μ ± kσ thresholds─▶ levels {0 … L−1} ─base + (level − c)·step─▶ QualityMap

With L = 3 (the paper's default) the thresholds are μ − kσ and μ + kσ, so the levels
mean decrease / keep / increase. For other L the L − 1 thresholds are spread evenly
over [μ − kσ, μ + kσ]; the centre level c = (L − 1)/2 keeps the base quality.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError
from ..quality_map import QualityMap

__all__ = ["pool_map", "quantize_levels", "levels_to_quality_map", "thresholds"]


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
