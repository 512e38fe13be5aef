"""The ``.cotam`` bitstream container (format version 3; versions 1 and 2 still parse). Specification: ``docs/bitstream.md``.

A container holds one or more coded images (or video frames) from one codec::

    file    = MAGIC "\\x89CTM" · version u8 · [kind u8, version 3] · codec_id[8] · n_items varint · header_crc u32 · item*
    item    = flags u8 · orig_w · orig_h · canvas_w · canvas_h (varints) · resize_mode u8 ·
              base_quality u8 · [quality map, when flags bit 1] · n_streams varint ·
              stream_len varint × n_streams · symbol_crc u32 · item_crc u32 · payload
    payload = the rANS streams, concatenated (learned kind), or one intra-coded HEVC / AV1 picture

``kind`` (version 3) says which base codec made the items, and for the learned codec in which entropy
arithmetic (:class:`CodecKind`); versions 1 and 2 are always the learned codec in float arithmetic. Writers use
the oldest version that can say what a container holds: float learned containers are still written as version 2
(byte for byte what earlier writers made), fixed-point learned and standard-codec containers as version 3.

``header_crc`` covers every byte before it; ``item_crc`` covers the item's index
(u32, version 2 only: reordered or duplicated items fail), the item's header bytes
(flags … symbol_crc) and its payload. The parser never trusts a
length: every field is bounds-checked against the bytes present and against
:class:`ParseLimits` before anything is allocated, and every failure raises a
:class:`~cotam_llava.errors.BitstreamError` subclass.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import (
    BitstreamFormatError,
    BitstreamLimitError,
    BitstreamTruncatedError,
    ChecksumError,
    ConfigError,
)
from .quality_map import QualityMap

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ResizeMode",
    "CodecKind",
    "is_learned_kind",
    "entropy_arithmetic_of",
    "CodedItem",
    "Container",
    "ParseLimits",
    "padded_canvas",
    "canvas_for",
    "serialize",
    "parse",
]

MAGIC = b"\x89CTM"
FORMAT_VERSION = 3
#: Versions this parser reads: 1 (item CRCs without the item index), 2, and 3 (adds the codec kind).
READABLE_VERSIONS = (1, 2, 3)
#: The version learned-codec containers are written in (version 3 would only add a kind byte saying "learned").
LEARNED_VERSION = 2
_FLAG_VIDEO_FRAME = 0x01
_FLAG_HAS_MAP = 0x02
_KNOWN_FLAGS = _FLAG_VIDEO_FRAME | _FLAG_HAS_MAP
_MAX_VARINT_BYTES = 5  # values < 2**35, far above any limit


class CodecKind(IntEnum):
    """Which base codec made a container's items (format version 3; versions 1 and 2 are ``LEARNED``).

    ``LEARNED``: the CoTAM learned codec (rANS streams of ŷ and z; ``codec_id`` names the checkpoint), its
    entropy parameters computed in float. ``LEARNED_FIXED``: the same streams, with entropy parameters computed
    on the exact fixed-point grid of :mod:`cotam_llava.codec.exact` (decodable bit for bit on any device). ``HEVC``: one intra-coded H.265 picture per item (Annex-B byte stream, x265). ``AV1``: one intra-coded
    AV1 picture per item (low-overhead OBU stream, SVT-AV1). For the standard kinds ``codec_id`` names
    the encoder, its version and settings (see ``codec.standard``).
    """

    LEARNED = 0
    HEVC = 1
    AV1 = 2
    LEARNED_FIXED = 3


def is_learned_kind(kind: CodecKind) -> bool:
    """Whether a container of ``kind`` holds the learned codec's rANS streams (either entropy arithmetic)."""
    return kind in (CodecKind.LEARNED, CodecKind.LEARNED_FIXED)


def entropy_arithmetic_of(kind: CodecKind) -> str:
    """The entropy arithmetic (``"fixed"`` or ``"float"``) of a learned container's streams."""
    if not is_learned_kind(kind):
        raise ValueError(f"{kind.name.lower()} containers hold no learned streams")
    return "fixed" if kind == CodecKind.LEARNED_FIXED else "float"


class ResizeMode(IntEnum):
    """How the original image was brought to the codec canvas.

    ``PAD``: replicate-padded on the right and bottom to multiples of 64 (native
    resolution; the decoder crops). ``RESIZE``: resized (bicubic) to the canvas, as an
    MLLM's image processor would (the decoder resizes back for display).
    """

    PAD = 0
    RESIZE = 1


@dataclass(frozen=True)
class ParseLimits:
    """Bounds the parser and decoder enforce before any work sized by the stream.

    The defaults suit a server facing untrusted devices: decoding costs time and memory in
    proportion to the canvas area (elic-small on a 2-core CPU: ≈ 1 s and 0.4 GiB per megapixel),
    so the budgets below bound what one request can cost. Raise them where that is affordable.

    Args:
        max_pixels: largest original or canvas area of one item (default 3840×2160, 4K UHD).
        max_side: largest width or height (default 8192).
        max_items: most images/frames in one container (default 1024; video MLLMs sample 8–64).
        max_total_pixels: largest sum of canvas areas over a container's items (default 64 Mpx,
            e.g. 32 frames of 1920×1080).
        max_streams: most rANS streams per item.
    """

    max_pixels: int = 3840 * 2160
    max_side: int = 8192
    max_items: int = 1024
    max_total_pixels: int = 64 * 1024 * 1024
    max_streams: int = 64

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_side", "max_items", "max_total_pixels", "max_streams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParseLimits.{name} must be a positive integer, got {value!r}")


@dataclass
class CodedItem:
    """One coded image or frame.

    Attributes:
        orig_size: (width, height) of the original image.
        canvas_size: (width, height) the codec ran at; multiples of 64.
        resize_mode: how the original became the canvas.
        base_quality: quality level of positions the map does not raise or lower.
        quality_map: per-region levels (None: ``base_quality`` everywhere).
        streams: rANS streams (ŷ groups × checkerboard passes, then z).
        symbol_crc: CRC32 of the entropy-coded symbols (see ``codec.symbols``).
        is_video_frame: the item is a frame of a video (decoded in order).
    """

    orig_size: tuple[int, int]
    canvas_size: tuple[int, int]
    resize_mode: ResizeMode
    base_quality: int
    quality_map: QualityMap | None
    streams: list[bytes]
    symbol_crc: int
    is_video_frame: bool = False
    header_bytes: int = field(default=0, compare=False)

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for s in self.streams)

    @property
    def map_bits(self) -> int:
        return 8 * len(self.quality_map.to_bytes()) if self.quality_map is not None else 0


@dataclass
class Container:
    """A parsed or to-be-written ``.cotam`` file.

    Attributes:
        codec_id: the 8-byte id of the codec (checkpoint, or standard encoder and settings) that made the streams.
        items: the coded images or frames, in order.
        kind: the base codec's kind (learned, hevc, av1).
        file_header_bytes: size of the file header (set by :func:`parse` / :func:`serialize`).
        version: the format version (set by :func:`parse` / :func:`serialize`).
    """

    codec_id: bytes
    items: list[CodedItem]
    kind: CodecKind = CodecKind.LEARNED
    file_header_bytes: int = field(default=0, compare=False)
    version: int = field(default=0, compare=False)


# ---------------------------------------------------------------------------- writing
def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def padded_canvas(orig_size: tuple[int, int]) -> tuple[int, int]:
    """The canvas of a ``ResizeMode.PAD`` item: the original size rounded up to multiples of 64."""
    return (-(-orig_size[0] // 64) * 64, -(-orig_size[1] // 64) * 64)


def canvas_for(orig_size: tuple[int, int], canvas: int | tuple[int, int] | None) -> tuple[tuple[int, int], ResizeMode]:
    """Canvas (width, height) and resize mode for an image of ``orig_size`` (width, height); every base codec's rule.

    None: the original padded to multiples of 64 (``PAD``); an int or (width, height): that canvas (``RESIZE``).
    """
    if canvas is None:
        return padded_canvas(orig_size), ResizeMode.PAD
    cw, ch = (canvas, canvas) if isinstance(canvas, int) else canvas
    if cw <= 0 or ch <= 0 or cw % 64 or ch % 64:
        raise ConfigError(f"canvas sides must be positive multiples of 64, got {cw}×{ch}")
    return (cw, ch), ResizeMode.RESIZE


def encodable_canvas(orig_size: tuple[int, int], canvas: int | tuple[int, int] | None) -> tuple[tuple[int, int], ResizeMode]:
    """:func:`canvas_for`, refusing (``ConfigError``) a canvas that decoders reject by default (:class:`ParseLimits`),
    so that an encoder never writes a file its own decoder will not read."""
    size, mode = canvas_for(orig_size, canvas)
    limits = ParseLimits()
    if size[0] * size[1] > limits.max_pixels or max(size) > limits.max_side:
        raise ConfigError(
            f"canvas {size[0]}×{size[1]} exceeds what decoders accept by default ({limits.max_pixels} pixels, "
            f"{limits.max_side} per side): pass a smaller canvas"
        )
    return size, mode


def _item_header(item: CodedItem) -> bytes:
    if not 0 <= item.base_quality < 16:
        raise ValueError(f"base_quality must be in [0, 15], got {item.base_quality}")
    if item.resize_mode == ResizeMode.PAD and tuple(item.canvas_size) != padded_canvas(item.orig_size):
        raise ValueError(f"a padded canvas must be the original size rounded up to multiples of 64, got {item.canvas_size}")
    flags = (_FLAG_VIDEO_FRAME if item.is_video_frame else 0) | (_FLAG_HAS_MAP if item.quality_map is not None else 0)
    out = bytearray([flags])
    for v in (*item.orig_size, *item.canvas_size):
        out += _varint(int(v))
    out += bytes([int(item.resize_mode), int(item.base_quality)])
    if item.quality_map is not None:
        out += item.quality_map.to_bytes()
    out += _varint(len(item.streams))
    for s in item.streams:
        out += _varint(len(s))
    out += struct.pack("<I", item.symbol_crc & 0xFFFFFFFF)
    return bytes(out)


def _item_crc(version: int, index: int, header: bytes | memoryview, payload: bytes | memoryview) -> int:
    seed = zlib.crc32(struct.pack("<I", index)) if version >= 2 else 0
    return zlib.crc32(payload, zlib.crc32(header, seed))


def serialize(container: Container) -> bytes:
    """Write a container to bytes (see the module docstring for the layout)."""
    if len(container.codec_id) != 8:
        raise ValueError("codec_id must be 8 bytes")
    kind = CodecKind(container.kind)
    version = LEARNED_VERSION if kind == CodecKind.LEARNED else FORMAT_VERSION
    head = MAGIC + bytes([version]) + (bytes([kind]) if version >= 3 else b"") + container.codec_id
    head += _varint(len(container.items))
    head += struct.pack("<I", zlib.crc32(head))
    container.file_header_bytes = len(head)
    container.version = version
    parts = [head]
    for index, item in enumerate(container.items):
        header = _item_header(item)
        payload = b"".join(item.streams)
        crc = _item_crc(version, index, header, payload)
        parts += [header, struct.pack("<I", crc), payload]
        item.header_bytes = len(header) + 4
    return b"".join(parts)


# ---------------------------------------------------------------------------- parsing
class _Reader:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.view) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise BitstreamTruncatedError(f"stream ends inside {what} (needs {n} bytes, {self.remaining()} left)")
        out = self.view[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise BitstreamFormatError(f"{what}: non-canonical varint")
                return value
        raise BitstreamFormatError(f"{what}: varint longer than {_MAX_VARINT_BYTES} bytes")


def _size(reader: _Reader, what: str, limits: ParseLimits) -> tuple[int, int]:
    w, h = reader.varint(f"{what} width"), reader.varint(f"{what} height")
    if w == 0 or h == 0:
        raise BitstreamFormatError(f"{what} size {w}×{h} is empty")
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise BitstreamLimitError(
            f"{what} size {w}×{h} exceeds the limits ({limits.max_side} per side, {limits.max_pixels} pixels)"
        )
    return w, h


def parse(data: bytes | bytearray | memoryview, limits: ParseLimits | None = None) -> Container:
    """Parse and validate a ``.cotam`` file.

    Checks magic, version, flags, every length against the bytes present, sizes and
    counts against ``limits``, and both CRCs. Decoder-level checks (codec id, number
    of streams, quality range, symbol checksum) happen in ``codec.pipeline.decode`` (learned kind)
    and ``codec.standard.decode`` (hevc, av1).

    Raises:
        BitstreamError: a subclass naming what is wrong; never another exception.
    """
    limits = limits or ParseLimits()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamFormatError(f"expected bytes, got {type(data).__name__}")
    reader = _Reader(data)
    magic = bytes(reader.take(len(MAGIC), "the magic number"))
    if magic != MAGIC:
        raise BitstreamFormatError("not a .cotam bitstream (wrong magic number)")
    version = reader.u8("the version")
    if version not in READABLE_VERSIONS:
        raise BitstreamFormatError(
            f"unsupported .cotam format version {version} (this decoder reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    kind = CodecKind.LEARNED
    if version >= 3:
        kind_byte = reader.u8("the codec kind")
        if kind_byte not in CodecKind._value2member_map_:
            raise BitstreamFormatError(f"unknown codec kind {kind_byte} (this decoder reads "
                                       f"{', '.join(f'{k.value} = {k.name.lower()}' for k in CodecKind)})")
        kind = CodecKind(kind_byte)
    codec_id = bytes(reader.take(8, "the codec id"))
    n_items = reader.varint("the item count")
    header_end = reader.pos
    header_crc = reader.u32("the header CRC")
    if zlib.crc32(reader.view[:header_end]) != header_crc:
        raise ChecksumError("file header CRC mismatch: the bitstream is corrupted")
    if n_items == 0:
        raise BitstreamFormatError("container holds no items")
    if n_items > limits.max_items:
        raise BitstreamLimitError(f"container declares {n_items} items (limit {limits.max_items})")
    container = Container(codec_id=codec_id, items=[], kind=kind, file_header_bytes=reader.pos, version=version)
    total_pixels = 0

    for index in range(n_items):
        what = f"item {index}"
        start = reader.pos
        flags = reader.u8(f"{what} flags")
        if flags & ~_KNOWN_FLAGS:
            raise BitstreamFormatError(f"{what}: unknown flags 0x{flags:02x}")
        orig = _size(reader, f"{what} original", limits)
        canvas = _size(reader, f"{what} canvas", limits)
        if canvas[0] % 64 or canvas[1] % 64:
            raise BitstreamFormatError(f"{what}: canvas {canvas[0]}×{canvas[1]} is not a multiple of 64")
        total_pixels += canvas[0] * canvas[1]
        if total_pixels > limits.max_total_pixels:
            raise BitstreamLimitError(
                f"{what}: the container's canvases exceed {limits.max_total_pixels} pixels in all (ParseLimits.max_total_pixels)"
            )
        mode = reader.u8(f"{what} resize mode")
        if mode not in ResizeMode._value2member_map_:
            raise BitstreamFormatError(f"{what}: unknown resize mode {mode}")
        if mode == ResizeMode.PAD and canvas != padded_canvas(orig):
            raise BitstreamFormatError(
                f"{what}: a padded canvas must be the original {orig[0]}×{orig[1]} rounded up to multiples of 64, "
                f"got {canvas[0]}×{canvas[1]}"
            )
        base_quality = reader.u8(f"{what} base quality")
        if base_quality >= 16:
            raise BitstreamFormatError(f"{what}: base quality {base_quality} out of range")
        qmap = None
        if flags & _FLAG_HAS_MAP:
            qmap, reader.pos = QualityMap.from_bytes(reader.view, reader.pos)
        n_streams = reader.varint(f"{what} stream count")
        if not 1 <= n_streams <= limits.max_streams:
            raise BitstreamLimitError(f"{what}: {n_streams} streams (1..{limits.max_streams} allowed)")
        lengths = [reader.varint(f"{what} stream length") for _ in range(n_streams)]
        symbol_crc = reader.u32(f"{what} symbol checksum")
        header_stop = reader.pos
        item_crc = reader.u32(f"{what} CRC")
        total = sum(lengths)
        if total > reader.remaining():
            raise BitstreamTruncatedError(
                f"{what}: payload of {total} bytes announced, only {reader.remaining()} present"
            )
        payload = reader.take(total, f"{what} payload")
        if _item_crc(version, index, reader.view[start:header_stop], payload) != item_crc:
            raise ChecksumError(f"{what}: CRC mismatch: the bitstream is corrupted")
        streams, offset = [], 0
        for n in lengths:
            streams.append(bytes(payload[offset:offset + n]))
            offset += n
        container.items.append(
            CodedItem(
                orig_size=orig,
                canvas_size=canvas,
                resize_mode=ResizeMode(mode),
                base_quality=base_quality,
                quality_map=qmap,
                streams=streams,
                symbol_crc=symbol_crc,
                is_video_frame=bool(flags & _FLAG_VIDEO_FRAME),
                header_bytes=header_stop - start + 4,
            )
        )
    if reader.remaining():
        raise BitstreamFormatError(f"{reader.remaining()} unexpected bytes after the last item")
    return container
