"""Checksum of the quantized latent symbols that pass through the rANS coder.

Learned codecs fail across devices when the decoder's entropy parameters differ
by a rounding error from the encoder's: rANS then decodes *different* integers
and the image is garbage (CompressAI issue #279). To detect this, the encoder
records a CRC32 of every integer symbol it entropy-codes (z, then each ŷ group
in coding order) and stores it in the bitstream; the decoder computes the same
CRC over the symbols it decodes and raises :class:`SymbolMismatchError` on a
difference.

The tap wraps CompressAI's entropy-coder object on each entropy model, so the
symbols are exactly the integers handed to / returned by rANS. In ``"decode"`` mode it
also replaces CompressAI's native decoder by the bounds-checked one of :mod:`.rans`
(same streams; a crafted stream raises instead of reading out of bounds).
"""

from __future__ import annotations

import contextlib
import zlib
from array import array
from typing import Any, Iterator, Sequence

import numpy as np
from torch import nn

from .._compressai import compressai  # noqa: F401  (import order: the shim first)
from compressai.entropy_models import EntropyModel

from . import rans

__all__ = ["SymbolTap", "tap_symbols"]


class SymbolTap:
    """Running CRC32 over the symbols that one side of the codec entropy-codes.

    Args:
        mode: ``"encode"`` records the symbols given to ``encode_with_indexes``;
            ``"decode"`` records the symbols returned by ``decode_with_indexes``.
    """

    def __init__(self, mode: str) -> None:
        if mode not in ("encode", "decode"):
            raise ValueError(f"mode must be 'encode' or 'decode', got {mode!r}")
        self.mode = mode
        self.crc = 0
        self.count = 0

    def update(self, symbols: Sequence[int] | np.ndarray) -> None:
        data = symbols.astype("<i4").tobytes() if isinstance(symbols, np.ndarray) else array("i", symbols).tobytes()
        self.crc = zlib.crc32(data, self.crc)
        self.count += len(symbols)


class _TappedCoder:
    """Proxy for CompressAI's ``_EntropyCoder`` that feeds a :class:`SymbolTap`."""

    def __init__(self, coder: Any, tap: SymbolTap) -> None:
        self._coder = coder
        self._tap = tap

    def encode_with_indexes(self, symbols, *args, **kwargs):
        if self._tap.mode == "encode":
            self._tap.update(symbols)
        return self._coder.encode_with_indexes(symbols, *args, **kwargs)

    def decode_with_indexes(self, *args, **kwargs):
        if self._tap.mode != "decode":
            return self._coder.decode_with_indexes(*args, **kwargs)
        values = rans.decode_with_indexes(*args, **kwargs)
        self._tap.update(values)
        return values

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coder, name)


@contextlib.contextmanager
def tap_symbols(model: nn.Module, mode: str) -> Iterator[SymbolTap]:
    """Record a CRC32 of the symbols every entropy model of ``model`` codes inside the block."""
    tap = SymbolTap(mode)
    modules = [m for m in model.modules() if isinstance(m, EntropyModel)]
    originals = [m.entropy_coder for m in modules]
    try:
        for module, coder in zip(modules, originals):
            module.entropy_coder = _TappedCoder(coder, tap)
        yield tap
    finally:
        for module, coder in zip(modules, originals):
            module.entropy_coder = coder
