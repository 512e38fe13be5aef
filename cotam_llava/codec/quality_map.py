"""Per-region quality maps and their compact form in the bitstream.

A :class:`QualityMap` is a small grid of quality levels (e.g. the 8×8 guidance map
of CoTAM §3.2 after μ±kσ quantization and mapping to base quality ± step). It is
expanded to the latent grid (H/16 × W/16) by nearest-neighbour indexing with an
integer rule that encoder and decoder share::

    latent row i, column j  →  cell (i·gh // h, j·gw // w)

In the bitstream the map costs ``ceil(log2 L)`` bits per cell for L distinct
levels (2 bits for 3 levels: 128 bits for 8×8), plus 3 bytes of sizes and a 4-bit
quality per level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BitstreamFormatError, BitstreamTruncatedError, ConfigError

__all__ = ["QualityMap", "MAX_LEVELS"]

#: At most 16 distinct levels (qualities are 4-bit in the bitstream).
MAX_LEVELS = 16


@dataclass(frozen=True)
class QualityMap:
    """A grid of quality levels, shape (gh, gw), values in [0, 15].

    Args:
        grid: integer array of shape (gh, gw) with 1 ≤ gh, gw ≤ 255.
    """

    grid: np.ndarray

    def __post_init__(self) -> None:
        grid = np.asarray(self.grid)
        if grid.ndim != 2 or not (1 <= grid.shape[0] <= 255 and 1 <= grid.shape[1] <= 255):
            raise ConfigError(f"a quality map is a 2-D grid of at most 255×255 cells, got shape {grid.shape}")
        if not np.issubdtype(grid.dtype, np.integer):
            raise ConfigError(f"quality map values must be integers, got dtype {grid.dtype}")
        if grid.min() < 0 or grid.max() >= MAX_LEVELS:
            raise ConfigError(f"quality map values must lie in [0, {MAX_LEVELS - 1}]")
        object.__setattr__(self, "grid", grid.astype(np.uint8))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.grid.shape[0]), int(self.grid.shape[1])

    def expand(self, h: int, w: int) -> np.ndarray:
        """The map on an (h, w) latent grid: (h, w) uint8, nearest-neighbour by integer indexing."""
        gh, gw = self.shape
        rows = (np.arange(h) * gh) // h
        cols = (np.arange(w) * gw) // w
        return self.grid[rows[:, None], cols[None, :]]

    # ------------------------------------------------------------------ wire format
    def levels(self) -> list[int]:
        return sorted(int(v) for v in np.unique(self.grid))

    def cell_bits(self) -> int:
        """Bits spent on the cells alone: ceil(log2 L) per cell."""
        n = len(self.levels())
        return self.grid.size * (math.ceil(math.log2(n)) if n > 1 else 0)

    def to_bytes(self) -> bytes:
        """gh, gw, L (one byte each); L 4-bit level qualities; cells as level indices, MSB first."""
        levels = self.levels()
        index = {q: i for i, q in enumerate(levels)}
        nbits = math.ceil(math.log2(len(levels))) if len(levels) > 1 else 0
        out = bytearray([self.grid.shape[0], self.grid.shape[1], len(levels)])
        out += _pack([*levels], 4)
        out += _pack([index[int(v)] for v in self.grid.reshape(-1)], nbits)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, offset: int = 0) -> tuple["QualityMap", int]:
        """Parse a map at ``offset``; returns (map, offset after it). Raises bitstream errors."""
        view = memoryview(data)
        if offset + 3 > len(view):
            raise BitstreamTruncatedError("stream ends inside the quality map header")
        gh, gw, n = view[offset], view[offset + 1], view[offset + 2]
        offset += 3
        if gh == 0 or gw == 0:
            raise BitstreamFormatError(f"quality map has an empty grid ({gh}×{gw})")
        if not 1 <= n <= MAX_LEVELS:
            raise BitstreamFormatError(f"quality map declares {n} levels (1..{MAX_LEVELS} allowed)")
        level_bytes = (n * 4 + 7) // 8
        nbits = math.ceil(math.log2(n)) if n > 1 else 0
        cell_bytes = (gh * gw * nbits + 7) // 8
        if offset + level_bytes + cell_bytes > len(view):
            raise BitstreamTruncatedError("stream ends inside the quality map")
        levels = _unpack(view[offset:offset + level_bytes], 4, n)
        offset += level_bytes
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise BitstreamFormatError("quality map levels are not strictly ascending")
        cells = _unpack(view[offset:offset + cell_bytes], nbits, gh * gw) if nbits else [0] * (gh * gw)
        offset += cell_bytes
        if max(cells) >= n:
            raise BitstreamFormatError("quality map cell refers to an undeclared level")
        grid = np.array([levels[c] for c in cells], dtype=np.uint8).reshape(gh, gw)
        return cls(grid), offset

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QualityMap) and np.array_equal(self.grid, other.grid)

    def __hash__(self) -> int:
        return hash((self.grid.shape, self.grid.tobytes()))


def _pack(values: list[int], nbits: int) -> bytes:
    if nbits == 0:
        return b""
    acc, filled, out = 0, 0, bytearray()
    for v in values:
        acc = (acc << nbits) | v
        filled += nbits
        while filled >= 8:
            filled -= 8
            out.append((acc >> filled) & 0xFF)
    if filled:
        out.append((acc << (8 - filled)) & 0xFF)
    return bytes(out)


def _unpack(data: bytes | memoryview, nbits: int, count: int) -> list[int]:
    values, acc, filled = [], 0, 0
    it = iter(bytes(data))
    mask = (1 << nbits) - 1
    while len(values) < count:
        while filled < nbits:
            acc = (acc << 8) | next(it)
            filled += 8
        filled -= nbits
        values.append((acc >> filled) & mask)
    return values
