"""Bitstreams as tensors: how ``.cotam`` containers travel through transformers (``BatchFeature``, ``generate``).

Those only move tensors, so the processor packs each container into a row of one ``uint8`` tensor, sent as the
host model's ``pixel_values``; float casts (``.half()``, ``.to(bfloat16)``) never touch integer tensors, and the
tower unpacks the rows back into the exact bytes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import BitstreamFormatError, ConfigError

__all__ = ["pack_bitstreams", "unpack_bitstreams", "is_packed_bitstreams"]

_LEN_BYTES = 8


def pack_bitstreams(streams: Sequence[bytes]) -> Tensor:
    """Pack containers into one ``uint8`` tensor (N, 8 + max_len): a little-endian length, the bytes, zeros.

    This is how bitstreams travel through ``BatchFeature``/``generate`` (which only move tensors) as the
    host model's ``pixel_values``; float casts never touch integer tensors.
    """
    if not streams:
        raise ConfigError("no bitstreams to pack")
    width = _LEN_BYTES + max(len(s) for s in streams)
    out = np.zeros((len(streams), width), dtype=np.uint8)
    for i, s in enumerate(streams):
        out[i, :_LEN_BYTES] = np.frombuffer(len(s).to_bytes(_LEN_BYTES, "little"), dtype=np.uint8)
        out[i, _LEN_BYTES : _LEN_BYTES + len(s)] = np.frombuffer(bytes(s), dtype=np.uint8)
    return torch.from_numpy(out)


def is_packed_bitstreams(value: Any) -> bool:
    """True for a tensor made by :func:`pack_bitstreams` (2-D uint8)."""
    return isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 2


def unpack_bitstreams(packed: Tensor) -> list[bytes]:
    """Inverse of :func:`pack_bitstreams`.

    Raises:
        BitstreamFormatError: a length field does not fit its row.
    """
    if not is_packed_bitstreams(packed):
        raise BitstreamFormatError(f"packed bitstreams must be a 2-D uint8 tensor, got {tuple(packed.shape)} {packed.dtype}")
    rows = packed.detach().cpu().numpy()
    out = []
    for i, row in enumerate(rows):
        n = int.from_bytes(row[:_LEN_BYTES].tobytes(), "little")
        if n > row.size - _LEN_BYTES:
            raise BitstreamFormatError(f"packed bitstream {i} claims {n} bytes but its row holds {row.size - _LEN_BYTES}")
        out.append(row[_LEN_BYTES : _LEN_BYTES + n].tobytes())
    return out
