"""Validation of codec checkpoints from untrusted sources (a hub, a colleague, an attacker).

A checkpoint is ``config.json`` + ``model.safetensors``; it is never unpickled. Everything the
entropy coder's native code will trust is checked here first, and every failure is a
:class:`~cotam_llava.errors.CheckpointError` naming the tensor:

1. :func:`read_safetensors_header` parses the header (8-byte little-endian length, then JSON) with
   a size cap and checks that the tensors it announces exactly tile the file, without reading them.
2. :func:`check_layout` compares names, dtypes and shapes with what the config builds; the
   entropy models' tables (whose sizes a config does not fix) get size bounds instead.
3. :func:`check_values` (after :func:`load_tensors`): every floating tensor is finite, and the CDF
   tables of every :class:`EntropyBottleneck` and :class:`GaussianConditional` are what CompressAI's
   ``update()`` makes — for each of the R distributions::

       _quantized_cdf (R, W) int32   row r: 0 = c_0 < c_1 < … < c_{L_r − 1} = 2^precision
       _cdf_length    (R,)   int32   L_r ∈ [3, W]  (≥ 2 symbols + the bypass/tail symbol)
       _offset        (R,)   int32   |o_r| ≤ MAX_OFFSET
       scale_table    (R,)   float   finite, positive, strictly ascending (GaussianConditional only)

   with R = the bottleneck's channels, or the length of the scale table; a finalized config
   needs every table non-empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .._compressai import compressai  # noqa: F401  (import order: the shim first)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from ..errors import CheckpointError

__all__ = [
    "MAX_CDF_ENTRIES",
    "MAX_CDF_ROWS",
    "MAX_HEADER_BYTES",
    "MAX_OFFSET",
    "TABLE_BUFFERS",
    "TensorRecord",
    "check_layout",
    "check_values",
    "load_tensors",
    "read_safetensors_header",
]

#: Largest safetensors header read (a codec's is a few tens of KiB).
MAX_HEADER_BYTES = 1 << 20
#: Most distributions in one entropy model's table (channels of z, or scale levels).
MAX_CDF_ROWS = 1024
#: Most entries in one ``_quantized_cdf`` (16 MiB of int32; the shipped tables have 200 000).
MAX_CDF_ENTRIES = 1 << 22
#: Largest |_offset|: symbols are int32, and the bypass path codes |value − offset| in chunks.
MAX_OFFSET = 1 << 20
#: Buffers of the entropy models whose sizes come from ``update()``, not from the config.
TABLE_BUFFERS = ("_quantized_cdf", "_cdf_length", "_offset", "scale_table")

#: safetensors dtype names of the tensors a codec can hold.
_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
_MAX_DIMS = 8


@dataclass(frozen=True)
class TensorRecord:
    """One tensor announced by a safetensors header: dtype, shape, and its byte range in the data section."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


# ---------------------------------------------------------------------------------------- header
def read_safetensors_header(path: Path) -> dict[str, TensorRecord]:
    """The tensors a safetensors file announces, read from its header alone.

    Checks the header length against :data:`MAX_HEADER_BYTES` and the file before reading it,
    every entry's dtype, shape and byte count, and that the byte ranges tile the data section
    exactly (so loading allocates no more than the file holds).

    Raises:
        CheckpointError: the file is unreadable, truncated, or its header is malformed.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(
                    f"{path} is not a safetensors file: its header length {n} does not fit "
                    f"a {size}-byte file (or exceeds {MAX_HEADER_BYTES} bytes)"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    records = {name: _record(path, name, entry) for name, entry in header.items() if name != "__metadata__"}
    position = 0
    for name, record in sorted(records.items(), key=lambda item: (item[1].begin, item[1].end)):
        if record.begin != position:
            raise CheckpointError(
                f"{path}: tensor {name[:100]} starts at byte {record.begin} of the data, expected {position}"
            )
        position = record.end
    if position != size - 8 - n:
        raise CheckpointError(f"{path}: the tensors cover {position} bytes but the file holds {size - 8 - n}")
    return records


def _record(path: Path, name: str, entry: object) -> TensorRecord:
    """Parse and check one header entry ``{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}``."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name[:100]} has {why} in the safetensors header")

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad("an entry other than {dtype, shape, data_offsets}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise bad(f"an unsupported dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_is_count(d) for d in shape):
        raise bad(f"an invalid shape (a list of at most {_MAX_DIMS} non-negative integers is expected)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise bad("invalid data_offsets")
    begin, end = offsets
    if end - begin != math.prod(shape) * _DTYPES[dtype].itemsize:
        raise bad(f"data_offsets {offsets} that do not hold a {dtype} tensor of shape {shape}")
    return TensorRecord(dtype=_DTYPES[dtype], shape=tuple(shape), begin=begin, end=end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---------------------------------------------------------------------------------------- layout
def check_layout(
    expected: dict[str, Tensor], found: dict[str, tuple[torch.dtype, tuple[int, ...]]], source: str
) -> None:
    """Compare the (dtype, shape) of every tensor ``found`` in a checkpoint with the model's own ``expected`` ones.

    Names and dtypes must match exactly, and shapes too except for the entropy tables
    (:data:`TABLE_BUFFERS`), which :meth:`~compressai.entropy_models.EntropyModel.update` sizes:
    those are bounded (:data:`MAX_CDF_ROWS`, :data:`MAX_CDF_ENTRIES`) before anything is read.

    Raises:
        CheckpointError: naming the first missing, unexpected or mis-typed tensor.
    """
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match config.json "
            f"(missing: {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected: {[n[:100] for n in unexpected[:3]]}{'…' if len(unexpected) > 3 else ''})"
        )
    for name, tensor in expected.items():
        dtype, shape = found[name]
        if dtype != tensor.dtype:
            raise CheckpointError(f"{source}: {name} has dtype {dtype}, expected {tensor.dtype}")
        if name.rsplit(".", 1)[-1] in TABLE_BUFFERS:
            _check_table_shape(name, shape, source)
        elif shape != tuple(tensor.shape):
            raise CheckpointError(f"{source}: {name} has shape {shape}, the config builds {tuple(tensor.shape)}")


def _check_table_shape(name: str, shape: tuple[int, ...], source: str) -> None:
    if name.endswith("._quantized_cdf"):
        if shape == (0,):  # not finalized
            return
        if len(shape) != 2 or not 1 <= shape[0] <= MAX_CDF_ROWS or shape[1] < 3 or math.prod(shape) > MAX_CDF_ENTRIES:
            raise CheckpointError(
                f"{source}: {name} has shape {shape}; a CDF table is (rows, width) with 1 ≤ rows ≤ {MAX_CDF_ROWS}, "
                f"width ≥ 3 and at most {MAX_CDF_ENTRIES} entries"
            )
    elif len(shape) != 1 or shape[0] > MAX_CDF_ROWS:
        raise CheckpointError(f"{source}: {name} has shape {shape}, expected (rows,) with rows ≤ {MAX_CDF_ROWS}")


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of the safetensors file ``path``, on the CPU (call after its header was checked)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


# ---------------------------------------------------------------------------------------- values
def check_values(model: nn.Module, state: dict[str, Tensor], finalized: bool, source: str) -> None:
    """Check the values of a ``state`` whose layout passed :func:`check_layout` for ``model``.

    Every floating tensor must be finite, and every entropy model's tables valid (see the module
    docstring); ``finalized`` (the config's flag) requires them non-empty.

    Raises:
        CheckpointError: naming the tensor (and the row of a table) at fault.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: {name} has {bad} non-finite values (NaN or inf)")
    for prefix, module in model.named_modules():  # shared modules once, under the names canonical_state uses
        if isinstance(module, (EntropyBottleneck, GaussianConditional)):
            _check_tables(module, prefix, state, finalized, source)


def _check_tables(
    module: EntropyBottleneck | GaussianConditional, prefix: str, state: dict[str, Tensor], finalized: bool, source: str
) -> None:
    """Check the CDF tables ``state`` holds for the entropy model ``module`` named ``prefix`` (module docstring)."""
    name = {buffer: f"{prefix}.{buffer}" for buffer in TABLE_BUFFERS}
    cdf, lengths, offsets = (state[name[b]] for b in ("_quantized_cdf", "_cdf_length", "_offset"))
    if isinstance(module, GaussianConditional):
        rows = _check_scale_table(state[name["scale_table"]], name["scale_table"], source)
        what = f"the {rows} entries of {name['scale_table']}"
    else:
        rows, what = module.channels, f"the {module.channels} channels of the bottleneck"
    if cdf.numel() == 0:
        if lengths.numel() or offsets.numel():
            raise CheckpointError(f"{source}: {name['_quantized_cdf']} is empty but its _cdf_length or _offset is not")
        if finalized:
            raise CheckpointError(
                f"{source}: config says finalized but the CDF table {name['_quantized_cdf']} is missing"
            )
        return
    if cdf.dim() != 2 or cdf.shape[0] != rows:
        raise CheckpointError(
            f"{source}: {name['_quantized_cdf']} has shape {tuple(cdf.shape)}, "
            f"expected one row per distribution ({what})"
        )
    for buffer, values in (("_cdf_length", lengths), ("_offset", offsets)):
        if tuple(values.shape) != (rows,):
            raise CheckpointError(f"{source}: {name[buffer]} has shape {tuple(values.shape)}, expected ({rows},)")
    width, total = cdf.shape[1], 1 << module.entropy_coder_precision
    lengths, offsets, cdf = lengths.long(), offsets.long(), cdf.long()
    _first_bad_row(name["_cdf_length"], (lengths < 3) | (lengths > width), lambda r: (
        f"length {int(lengths[r])} is outside [3, {width}] (2 symbols and the bypass symbol, within the row)"
    ), source)
    _first_bad_row(name["_offset"], offsets.abs() > MAX_OFFSET,
                   lambda r: f"offset {int(offsets[r])} exceeds ±{MAX_OFFSET}", source)
    ends = cdf.gather(1, (lengths - 1)[:, None])[:, 0]
    unused = torch.arange(1, width)[None, :] >= lengths[:, None]  # step c_{j-1} → c_j lies past the row's length
    rising = ((cdf[:, 1:] > cdf[:, :-1]) | unused).all(dim=1)
    _first_bad_row(name["_quantized_cdf"], cdf[:, 0] != 0, lambda r: f"starts at {int(cdf[r, 0])}, not 0", source)
    _first_bad_row(name["_quantized_cdf"], ends != total,
                   lambda r: f"ends at {int(ends[r])} (entry {int(lengths[r]) - 1}), not {total}", source)
    _first_bad_row(name["_quantized_cdf"], ~rising,
                   lambda r: f"not strictly increasing over its {int(lengths[r])} entries", source)


def _check_scale_table(table: Tensor, name: str, source: str) -> int:
    """The number of scale levels, after checking they are positive and strictly ascending (finite: see above)."""
    if table.dim() != 1:
        raise CheckpointError(f"{source}: {name} has shape {tuple(table.shape)}, expected (levels,)")
    if not (table > 0).all() or not (table[1:] > table[:-1]).all():
        raise CheckpointError(f"{source}: {name} must be positive and strictly ascending")
    return table.shape[0]


def _first_bad_row(name: str, bad: Tensor, why: Callable[[int], str], source: str) -> None:
    """Raise a :class:`CheckpointError` naming the first row where ``bad`` holds, and ``why(row)``."""
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise CheckpointError(f"{source}: {name} row {row}: {why(row)}")
