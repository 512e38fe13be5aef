"""Bounds-checked decoding of CompressAI's rANS streams (the cloud side's entropy decoder).

CompressAI's native ``RansDecoder`` (C++, ryg_rans ``Rans64``) trusts its input: its checks are
``assert``s, compiled out in release wheels, so a stream with a valid container CRC but too few
bytes, or a checkpoint with bad CDF tables, makes it read past its buffers and kill the process.
The decoder below reads **the same streams** (bit-exact: the encoder stays CompressAI's) and checks
every read, table index and bypass length, so that whatever the bytes, the result is either the
encoder's symbols or a :class:`~cotam_llava.errors.EntropyDecodingError`. It is compiled with numba
(a well-kept JIT; writing it in C++ would need a build step, and pure Python is ~50× slower).

It also checks what a correct stream must satisfy at its end: ``Rans64`` encoding starts from the
state ``L = 2³¹`` and the encoder flushes its final state, so after decoding every symbol the decoder's
state is ``L`` again and every 32-bit word has been read. A crafted or corrupted stream almost never
passes this, so tampering is caught **before** synthesis, without a second model pass.

Stream format (CompressAI 1.2.8, ``cpp_exts/rans/rans_interface.cpp``): little-endian 32-bit words;
two words of initial state, then one word per renormalisation; 16-bit CDF precision; a value outside
a CDF's range is coded as the CDF's last symbol followed by 4-bit bypass chunks (the chunk count, then
the chunks of ``raw = 2·v`` or ``−2·v − 1``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import EntropyDecodingError

__all__ = ["decode_with_indexes", "RANS_L", "PRECISION"]

RANS_L = 1 << 31  # lower bound of the normalisation interval (ryg_rans RANS64_L)
PRECISION = 16  # CDF precision (compressai: ``precision``)
_BYPASS_BITS = 4
_MAX_BYPASS_CHUNKS = 8  # a 32-bit raw value has at most 8 chunks of 4 bits; the encoder never writes more

_OK, _SHORT, _EOF, _INDEX, _TABLE, _BYPASS, _END_STATE, _TRAILING = range(8)
_MESSAGES = {
    _SHORT: "stream shorter than the 8 bytes of the initial rANS state",
    _EOF: "stream ends before its symbols do (reads past the last word)",
    _INDEX: "CDF index outside the codec's tables",
    _TABLE: "CDF table unusable for this symbol (not increasing, or not ending at 2^16)",
    _BYPASS: "escape code longer than any 32-bit value",
    _END_STATE: "final rANS state differs from the encoder's initial state (corrupted or crafted stream)",
    _TRAILING: "words left over after the last symbol (corrupted or crafted stream)",
}


def _kernel(words, indexes, cdfs, cdf_lengths, offsets, out):  # pragma: no cover - compiled by numba
    """Decode ``indexes.size`` symbols into ``out``; returns (status, index of the failing symbol)."""
    n_words = words.shape[0]
    if n_words < 2:
        return _SHORT, 0
    L = np.uint64(RANS_L)
    mask = np.uint64((1 << PRECISION) - 1)
    bits_mask = np.uint64((1 << _BYPASS_BITS) - 1)
    x = np.uint64(words[0]) | (np.uint64(words[1]) << np.uint64(32))
    pos = 2
    n_cdfs, width = cdfs.shape[0], cdfs.shape[1]
    for i in range(indexes.shape[0]):
        idx = indexes[i]
        if idx < 0 or idx >= n_cdfs:
            return _INDEX, i
        length = cdf_lengths[idx]
        if length < 2 or length > width:
            return _TABLE, i
        cum = np.int64(x & mask)
        s = -1
        for j in range(length):
            if cdfs[idx, j] > cum:
                s = j - 1
                break
        if s < 0 or s > length - 2:
            return _TABLE, i
        start = cdfs[idx, s]
        freq = cdfs[idx, s + 1] - start
        if freq <= 0 or start < 0:
            return _TABLE, i
        x = np.uint64(freq) * (x >> np.uint64(PRECISION)) + (x & mask) - np.uint64(start)
        if x < L:
            if pos >= n_words:
                return _EOF, i
            x = (x << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
        max_value = length - 2
        value = np.int64(s)
        if s == max_value:  # escape: the value is in bypass chunks
            chunks = np.int64(0)
            raw = np.int64(0)
            for k in range(1 + _MAX_BYPASS_CHUNKS):
                val = np.int64(x & bits_mask)
                x = x >> np.uint64(_BYPASS_BITS)
                if x < L:
                    if pos >= n_words:
                        return _EOF, i
                    x = (x << np.uint64(32)) | np.uint64(words[pos])
                    pos += 1
                if k == 0:
                    chunks = val
                    if chunks > _MAX_BYPASS_CHUNKS:
                        return _BYPASS, i
                elif k <= chunks:
                    raw |= val << np.int64(_BYPASS_BITS * (k - 1))
                if k >= chunks:
                    break
            if raw >= (1 << 31):  # compressai keeps raw in an int32
                raw -= 1 << 32
            value = raw >> 1
            if raw & 1:
                value = -value - 1
            else:
                value += max_value
        out[i] = value + offsets[idx]
    if x != L:
        return _END_STATE, indexes.shape[0]
    if pos != n_words:
        return _TRAILING, indexes.shape[0]
    return _OK, 0


_compiled = None


def _get_kernel():
    global _compiled
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True, boundscheck=False)(_kernel)
    return _compiled


def decode_with_indexes(
    string: bytes,
    indexes: Sequence[int] | np.ndarray,
    cdfs: Sequence[Sequence[int]] | np.ndarray,
    cdf_lengths: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """Decode one stream; the same arguments as CompressAI's ``RansDecoder.decode_with_indexes``.

    Args:
        string: the rANS stream (a multiple of 4 bytes, at least 8).
        indexes: the CDF row of each symbol, (n,).
        cdfs: quantized CDF rows, (rows, width), 16-bit precision.
        cdf_lengths: used length of each row, (rows,).
        offsets: value offset of each row, (rows,).

    Returns:
        The n decoded symbols, int32.

    Raises:
        EntropyDecodingError: the stream cannot be what the encoder wrote with these tables.
    """
    if len(string) % 4:
        raise EntropyDecodingError(f"rANS stream of {len(string)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(string, dtype="<u4")
    idx = np.ascontiguousarray(indexes, dtype=np.int32)
    table = np.ascontiguousarray(cdfs, dtype=np.int64)
    if table.ndim != 2:
        raise EntropyDecodingError("CDF table must be two-dimensional")
    lengths = np.ascontiguousarray(cdf_lengths, dtype=np.int64)
    offs = np.ascontiguousarray(offsets, dtype=np.int64)
    if lengths.shape != (table.shape[0],) or offs.shape != (table.shape[0],):
        raise EntropyDecodingError("CDF lengths and offsets must have one entry per CDF row")
    out = np.empty(idx.shape[0], dtype=np.int64)
    status, where = _get_kernel()(words, idx, table, lengths, offs, out)
    if status != _OK:
        raise EntropyDecodingError(f"rANS decoding failed at symbol {where} of {idx.shape[0]}: {_MESSAGES[status]}")
    if out.size and (out.min() < -(1 << 31) or out.max() >= (1 << 31)):
        raise EntropyDecodingError("decoded symbol outside the 32-bit range")
    return out.astype(np.int32)
