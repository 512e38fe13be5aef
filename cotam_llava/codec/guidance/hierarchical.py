"""Hierarchical guidance for high-resolution (AnyRes) inputs (CoTAM §3.4, appendix A.6).

LLaVA-OneVision-style models see a high-resolution image as a grid of tiles plus a
downsized global view. The image is coded once; its guidance fuses both views::

    global map  = guidance(whole image resized to the ViT input)  ─pool to (ty·G, tx·G)─┐
    local maps  = guidance(tile i,j) pooled to G×G, placed at block (i, j)  ──────────────┴─ + ─▶ fused
    fused ─μ ± kσ─▶ levels ─▶ QualityMap of (ty·G) × (tx·G) cells

Each map is standardised (zero mean, unit std) before the addition so that neither view
dominates only because of its attention scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ConfigError
from ...imageio import ImageLike, to_pil
from .levels import pool_map

__all__ = ["tile_boxes", "fuse_hierarchical", "hierarchical_map"]


def tile_boxes(width: int, height: int, tiles: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of a rows × cols grid of tiles covering the image, row-major."""
    rows, cols = tiles
    if rows < 1 or cols < 1:
        raise ConfigError(f"tile grid must be at least 1×1, got {rows}×{cols}")
    xs = [round(c * width / cols) for c in range(cols + 1)]
    ys = [round(r * height / rows) for r in range(rows + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(rows) for c in range(cols)]


def _standardise(m: Tensor) -> Tensor:
    std = m.std(unbiased=False)
    return (m - m.mean()) / std if float(std) > 0 else m - m.mean()


def fuse_hierarchical(global_map: Tensor, local_maps: Tensor, tiles: tuple[int, int], grid: int) -> Tensor:
    """Fuse a global map with per-tile maps by addition.

    Args:
        global_map: (gh, gw) map of the whole image, any resolution.
        local_maps: (rows·cols, h, w) maps of the tiles, row-major, any resolution.
        tiles: (rows, cols).
        grid: G, cells per tile side.

    Returns:
        (rows·G, cols·G) fused map.
    """
    rows, cols = tiles
    if local_maps.shape[0] != rows * cols:
        raise ConfigError(f"{local_maps.shape[0]} local maps for a {rows}×{cols} tile grid")
    full = _standardise(pool_map(global_map, (rows * grid, cols * grid)))
    local = torch.zeros_like(full)
    pooled = pool_map(local_maps, grid)
    for i in range(rows):
        for j in range(cols):
            local[i * grid:(i + 1) * grid, j * grid:(j + 1) * grid] = _standardise(pooled[i * cols + j])
    return full + local


def hierarchical_map(guidance, image: ImageLike, tiles: tuple[int, int]) -> Tensor:
    """Fused (rows·G, cols·G) importance map of ``image`` with ``guidance`` (a ShallowAttentionGuidance)."""
    pil = to_pil(image)
    boxes = tile_boxes(pil.width, pil.height, tiles)
    global_map = guidance([pil])[0]
    local_maps = guidance([pil.crop(box) for box in boxes])
    return fuse_hierarchical(global_map, local_maps, tiles, guidance.config.grid)
