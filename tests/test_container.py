"""Quality maps on the wire, the ``.cotam`` container, and the decoder's robustness to bad bytes."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotam_llava.codec import pipeline
from cotam_llava.codec.container import (
    LEARNED_VERSION,
    CodecKind,
    MAGIC,
    CodedItem,
    Container,
    ParseLimits,
    ResizeMode,
    parse,
    serialize,
)
from cotam_llava.codec.quality_map import QualityMap
from cotam_llava.errors import (
    BitstreamError,
    BitstreamFormatError,
    BitstreamLimitError,
    BitstreamTruncatedError,
    ChecksumError,
    ConfigError,
)

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ============================================================================ quality maps
@st.composite
def quality_maps(draw) -> QualityMap:
    levels = draw(st.lists(st.integers(0, 15), min_size=1, max_size=16, unique=True))
    gh, gw = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    cells = draw(st.lists(st.sampled_from(levels), min_size=gh * gw, max_size=gh * gw))
    return QualityMap(np.array(cells, dtype=np.int64).reshape(gh, gw))


@settings(max_examples=300, deadline=None, database=None)
@given(qmap=quality_maps(), prefix=st.binary(max_size=5), suffix=st.binary(max_size=5))
def test_quality_map_pack_unpack_round_trip(qmap, prefix, suffix):
    data = qmap.to_bytes()
    n = len(qmap.levels())
    bits = math.ceil(math.log2(n)) if n > 1 else 0
    assert len(data) == 3 + (4 * n + 7) // 8 + (qmap.grid.size * bits + 7) // 8
    assert qmap.cell_bits() == qmap.grid.size * bits
    parsed, end = QualityMap.from_bytes(prefix + data + suffix, offset=len(prefix))
    assert parsed == qmap
    assert parsed.grid.dtype == np.uint8
    assert end == len(prefix) + len(data)


def test_three_level_8x8_map_costs_two_bits_per_cell():
    grid = np.array([[(r + c) % 3 * 3 + 2 for c in range(8)] for r in range(8)])  # levels 2, 5, 8
    qmap = QualityMap(grid)
    assert qmap.levels() == [2, 5, 8]
    assert qmap.cell_bits() == 128
    # 3 bytes of sizes and level count, 3 × 4-bit levels (2 bytes), then exactly 16 bytes of cells.
    assert len(qmap.to_bytes()) == 3 + 2 + 16


def test_single_level_map_has_no_cell_bits():
    qmap = QualityMap(np.full((8, 8), 7))
    assert qmap.cell_bits() == 0
    assert len(qmap.to_bytes()) == 4
    assert QualityMap.from_bytes(qmap.to_bytes())[0] == qmap


def test_quality_map_expand_is_nearest_neighbour():
    qmap = QualityMap(np.array([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(
        qmap.expand(4, 6),
        np.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4], [3, 3, 3, 4, 4, 4]]),
    )
    big = QualityMap(np.arange(16).reshape(4, 4) % 16)
    assert big.expand(2, 2).tolist() == [[0, 2], [8, 10]]  # a grid finer than the latent is subsampled


@pytest.mark.parametrize(
    "grid",
    [np.zeros((0, 3), int), np.zeros((256, 1), int), np.zeros(5, int), np.array([[16]]), np.array([[-1]]),
     np.array([[1.5]])],
    ids=["empty", "too-tall", "1-D", "level-16", "negative", "float"],
)
def test_quality_map_rejects_bad_grids(grid):
    with pytest.raises(ConfigError):
        QualityMap(grid)


@pytest.mark.parametrize(
    "data, error",
    [
        (b"\x02\x02", BitstreamTruncatedError),
        (b"\x00\x02\x01\x50", BitstreamFormatError),  # empty grid
        (b"\x02\x02\x00", BitstreamFormatError),  # zero levels
        (b"\x02\x02\x11" + b"\x00" * 20, BitstreamFormatError),  # 17 levels
        (b"\x02\x02\x02\x31", BitstreamTruncatedError),  # cells missing
        (b"\x02\x02\x02\x33\x00", BitstreamFormatError),  # levels not ascending
        (b"\x01\x01\x03\x12\x30\xc0", BitstreamFormatError),  # cell index 3 of 3 levels
    ],
)
def test_quality_map_parse_errors(data, error):
    with pytest.raises(error):
        QualityMap.from_bytes(data)


# ============================================================================ container round trip
def _padded(size: tuple[int, int]) -> tuple[int, int]:
    return (-(-size[0] // 64) * 64, -(-size[1] // 64) * 64)


def _item(seed: int, with_map: bool, video: bool = False, n_streams: int = 9) -> CodedItem:
    rng = np.random.default_rng(seed)
    orig = (int(rng.integers(1, 2000)), int(rng.integers(1, 2000)))
    mode = ResizeMode(int(rng.integers(0, 2)))
    canvas = _padded(orig) if mode == ResizeMode.PAD else (64 * int(rng.integers(1, 32)), 64 * int(rng.integers(1, 32)))
    return CodedItem(
        orig_size=orig,
        canvas_size=canvas,
        resize_mode=mode,
        base_quality=int(rng.integers(0, 16)),
        quality_map=QualityMap(rng.integers(0, 10, size=(8, 8))) if with_map else None,
        streams=[rng.bytes(int(rng.integers(0, 300))) for _ in range(n_streams)],
        symbol_crc=int(rng.integers(0, 2**32)),
        is_video_frame=video,
    )


@pytest.mark.parametrize("video", [False, True])
def test_container_round_trip(video):
    items = [_item(0, False, video), _item(1, True, video), _item(2, True, video, n_streams=1), _item(3, False, video)]
    original = Container(codec_id=bytes(range(8)), items=copy.deepcopy(items))
    data = serialize(original)
    assert data[:4] == MAGIC and data[4] == LEARNED_VERSION
    parsed = parse(data)
    assert parsed == Container(codec_id=bytes(range(8)), items=items)
    assert [it.is_video_frame for it in parsed.items] == [video] * 4
    assert [it.quality_map is not None for it in parsed.items] == [False, True, True, False]
    # Accounting: file header + item headers + payloads is the whole file.
    assert parsed.file_header_bytes + sum(it.header_bytes + it.payload_bytes for it in parsed.items) == len(data)
    assert [it.header_bytes for it in parsed.items] == [it.header_bytes for it in original.items]
    assert parse(bytearray(data)) == parsed and parse(memoryview(data)) == parsed


@settings(max_examples=100, deadline=None, database=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 64), st.integers(1, 64),
                             st.sampled_from(list(ResizeMode))),
                   min_size=1, max_size=4),
    streams=st.lists(st.binary(max_size=40), min_size=1, max_size=12),
    qmap=st.none() | quality_maps(),
    quality=st.integers(0, 15),
    crc=st.integers(0, 2**32 - 1),
    video=st.booleans(),
)
def test_container_round_trip_property(sizes, streams, qmap, quality, crc, video):
    items = [
        CodedItem(orig_size=(ow, oh),
                  canvas_size=_padded((ow, oh)) if mode == ResizeMode.PAD else (64 * cw, 64 * ch),
                  resize_mode=mode, base_quality=quality, quality_map=qmap, streams=list(streams),
                  symbol_crc=crc, is_video_frame=video)
        for ow, oh, cw, ch, mode in sizes
    ]
    data = serialize(Container(codec_id=b"\xff" * 8, items=items))
    roomy = ParseLimits(max_pixels=4096 * 4096, max_total_pixels=4 * 4096 * 4096)  # the format, not the budgets
    assert parse(data, roomy) == Container(codec_id=b"\xff" * 8, items=items)


def test_serialize_rejects_bad_fields():
    with pytest.raises(ValueError):
        serialize(Container(codec_id=b"short", items=[_item(0, False)]))
    bad = _item(0, False)
    bad.base_quality = 16
    with pytest.raises(ValueError):
        serialize(Container(codec_id=bytes(8), items=[bad]))
    bad = _item(0, False)
    bad.resize_mode, bad.orig_size, bad.canvas_size = ResizeMode.PAD, (100, 100), (64, 64)
    with pytest.raises(ValueError, match="padded canvas"):
        serialize(Container(codec_id=bytes(8), items=[bad]))


# ============================================================================ real streams
@pytest.fixture(scope="module")
def small_stream(tiny_codec, synthetic_factory) -> bytes:
    """One 64×64 image at quality 5: a small real stream."""
    return pipeline.encode(tiny_codec, synthetic_factory(64, 64), 5)


@pytest.fixture(scope="module")
def fuzz_stream(tiny_codec, synthetic_factory) -> bytes:
    """Two items, the second with a quality map: exercises every container field."""
    images = [synthetic_factory(64, 64), synthetic_factory(64, 128)]
    maps = [None, QualityMap(np.array([[1, 9], [3, 5]]))]
    return pipeline.encode(tiny_codec, images, 5, quality_maps=maps)


def test_real_streams_decode(tiny_codec, small_stream, fuzz_stream):
    assert len(pipeline.decode(tiny_codec, small_stream)) == 1
    decoded = pipeline.decode(tiny_codec, fuzz_stream)
    assert [d.to_pil().size for d in decoded] == [(64, 64), (128, 64)]


def test_parse_rejects_empty_input():
    with pytest.raises(BitstreamTruncatedError):
        parse(b"")


def test_parse_rejects_non_bytes():
    with pytest.raises(BitstreamFormatError):
        parse("\x89CTM")  # type: ignore[arg-type]


def test_parse_rejects_wrong_magic(small_stream):
    for bad in (b"\x89PNG" + small_stream[4:], b"CTM\x89" + small_stream[4:]):
        with pytest.raises(BitstreamFormatError, match="magic"):
            parse(bad)


@pytest.mark.parametrize("version", [0, 4, 255])
def test_parse_rejects_unknown_version(small_stream, version):
    data = small_stream[:4] + bytes([version]) + small_stream[5:]
    with pytest.raises(BitstreamFormatError, match="version"):
        parse(data)


def test_every_truncation_of_a_real_stream_is_rejected(tiny_codec, small_stream):
    assert 100 < len(small_stream) < 4000
    for n in range(len(small_stream)):
        with pytest.raises(BitstreamTruncatedError):
            pipeline.decode(tiny_codec, small_stream[:n])


def test_limits_on_pixels_and_sides(small_stream):
    parse(small_stream, ParseLimits(max_pixels=64 * 64, max_side=64))  # exactly at the limits: fine
    with pytest.raises(BitstreamLimitError):
        parse(small_stream, ParseLimits(max_pixels=64 * 64 - 1))
    with pytest.raises(BitstreamLimitError):
        parse(small_stream, ParseLimits(max_side=63))


def test_limits_on_items_and_streams(fuzz_stream):
    parse(fuzz_stream, ParseLimits(max_items=2))
    with pytest.raises(BitstreamLimitError):
        parse(fuzz_stream, ParseLimits(max_items=1))
    with pytest.raises(BitstreamLimitError):
        parse(fuzz_stream, ParseLimits(max_streams=8))  # the tiny codec writes 9 streams per item


def test_limits_are_enforced_by_decode(tiny_codec, small_stream):
    with pytest.raises(BitstreamLimitError):
        pipeline.decode(tiny_codec, small_stream, ParseLimits(max_pixels=1000))


def test_bad_crcs_are_detected(fuzz_stream):
    header_len = parse(fuzz_stream).file_header_bytes
    # A changed codec id byte (covered by the header CRC).
    data = bytearray(fuzz_stream)
    data[6] ^= 0x01
    with pytest.raises(ChecksumError, match="header"):
        parse(bytes(data))
    # A corrupted header CRC.
    data = bytearray(fuzz_stream)
    data[header_len - 1] ^= 0x80
    with pytest.raises(ChecksumError):
        parse(bytes(data))
    # A flipped bit in the last payload byte (covered by the last item's CRC).
    data = bytearray(fuzz_stream)
    data[-1] ^= 0x01
    with pytest.raises(ChecksumError, match="item 1"):
        parse(bytes(data))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _header(n_items: int, codec_id: bytes = bytes(8)) -> bytes:
    head = MAGIC + bytes([LEARNED_VERSION]) + codec_id + _varint(n_items)
    return head + struct.pack("<I", zlib.crc32(head))


def test_huge_announced_payload_fails_fast_without_allocating():
    item = bytes([0]) + _varint(64) + _varint(64) + _varint(64) + _varint(64) + bytes([0, 5])
    item += _varint(64) + _varint(2**35 - 1) * 64  # 64 streams of ~32 GiB each, announced
    item += struct.pack("<I", 0)  # symbol crc
    item += struct.pack("<I", zlib.crc32(item))  # item crc over the header
    data = _header(1) + item + b"\x00" * 100
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BitstreamTruncatedError, match="announced"):
            parse(data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20, f"parse allocated {peak} bytes for a {len(data)}-byte input"


def test_huge_item_count_is_a_limit_error_not_a_loop():
    start = time.perf_counter()
    with pytest.raises(BitstreamLimitError):
        parse(_header(2**34) + b"\x00" * 10)
    with pytest.raises(BitstreamTruncatedError):
        parse(_header(1000))  # within the limit: fails at the first missing item
    assert time.perf_counter() - start < 0.5


def test_overlong_and_non_canonical_varints_are_format_errors():
    with pytest.raises(BitstreamFormatError, match="varint"):
        parse(_header(1)[:13] + b"\xff" * 6)
    head = MAGIC + bytes([LEARNED_VERSION]) + bytes(8) + b"\x81\x00"  # 1, padded with a zero byte
    with pytest.raises(BitstreamFormatError, match="non-canonical"):
        parse(head + struct.pack("<I", zlib.crc32(head)))


@pytest.mark.parametrize("orig", [(1000, 700), (200, 64), (64, 65)])
def test_pad_item_whose_canvas_does_not_fit_its_original_is_rejected(tiny_codec, small_stream, orig, monkeypatch):
    import cotam_llava.codec.container as container_module

    container = parse(small_stream)
    container.items[0].orig_size = orig  # canvas stays 64×64; CRCs are recomputed
    with monkeypatch.context() as m:  # get past the writer's own check to build the bad stream
        m.setattr(container_module, "padded_canvas", lambda size: container.items[0].canvas_size)
        data = serialize(container)
    with pytest.raises(BitstreamFormatError, match="padded canvas"):
        pipeline.decode(tiny_codec, data)


# ============================================================================ fuzzing
def _decode_outcome(model, original: bytes, data: bytes) -> None:
    """Changed bytes must raise a BitstreamError subclass; unchanged bytes must decode."""
    if data == original:
        assert len(pipeline.decode(model, data)) == len(parse(original).items)
        return
    with pytest.raises(BitstreamError):
        pipeline.decode(model, data)


@FUZZ
@given(data=st.data())
def test_fuzz_single_byte_mutations(tiny_codec, fuzz_stream, data):
    pos = data.draw(st.integers(0, len(fuzz_stream) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = bytearray(fuzz_stream)
    mutated[pos] = value
    _decode_outcome(tiny_codec, fuzz_stream, bytes(mutated))


@FUZZ
@given(data=st.data())
def test_fuzz_insertions_and_deletions(tiny_codec, fuzz_stream, data):
    pos = data.draw(st.integers(0, len(fuzz_stream)))
    if data.draw(st.booleans()):
        mutated = fuzz_stream[:pos] + data.draw(st.binary(min_size=1, max_size=16)) + fuzz_stream[pos:]
    else:
        mutated = fuzz_stream[:pos] + fuzz_stream[pos + data.draw(st.integers(1, 16)):]
    _decode_outcome(tiny_codec, fuzz_stream, mutated)


@FUZZ
@given(data=st.data())
def test_fuzz_truncations(tiny_codec, fuzz_stream, data):
    n = data.draw(st.integers(0, len(fuzz_stream)))
    truncated = fuzz_stream[:n]
    _decode_outcome(tiny_codec, fuzz_stream, truncated)
    if n < len(fuzz_stream):
        with pytest.raises(BitstreamTruncatedError):
            parse(truncated)


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=256))
def test_fuzz_appended_garbage(tiny_codec, fuzz_stream, garbage):
    _decode_outcome(tiny_codec, fuzz_stream, fuzz_stream + garbage)


@pytest.fixture(scope="module")
def fuzz_reference(tiny_codec, fuzz_stream):
    return pipeline.decode(tiny_codec, fuzz_stream)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_consistent_crcs_with_wrong_content(tiny_codec, fuzz_stream, fuzz_reference, data):
    """Streams rebuilt with valid CRCs (a careless or hostile encoder): the decoder raises a
    BitstreamError (symbol checksum, stream count, quality range), never another exception,
    and never returns a latent other than the encoder's.

    (A flipped bit in the rANS bytes can leave every decoded symbol unchanged — e.g. in the
    final state flush of a stream of near-certain symbols — and then decoding is allowed to
    succeed, but only with exactly the original latent.)
    """
    container = parse(fuzz_stream)
    index = data.draw(st.integers(0, len(container.items) - 1))
    item = container.items[index]
    kind = data.draw(st.sampled_from(["flip", "resplit", "canvas", "random", "drop", "extra", "quality"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(item.streams) - 1))
        s = bytearray(item.streams[i])
        if s:
            s[data.draw(st.integers(0, len(s) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        item.streams[i] = bytes(s)
    elif kind == "resplit":
        blob = b"".join(item.streams)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), min_size=len(item.streams) - 1,
                                         max_size=len(item.streams) - 1)))
        bounds = [0, *cuts, len(blob)]
        item.streams = [blob[a:b] for a, b in zip(bounds, bounds[1:])]
    elif kind == "canvas":  # a resized canvas of another size: parses, but the streams do not fit it
        item.resize_mode = ResizeMode.RESIZE
        item.canvas_size = (64 * data.draw(st.integers(1, 3)), 64 * data.draw(st.integers(1, 3)))
    elif kind == "random":
        item.streams = [data.draw(st.binary(max_size=64)) for _ in item.streams]
    elif kind == "drop":
        item.streams = item.streams[:-1]
    elif kind == "extra":
        item.streams = [*item.streams, b"\x00\x01"]
    else:
        item.base_quality = data.draw(st.integers(10, 15))
        if item.quality_map is not None:
            item.quality_map = QualityMap(np.array([[data.draw(st.integers(10, 15))]]))
    rebuilt = serialize(container)
    parse(rebuilt)  # the CRCs are consistent
    try:
        decoded = pipeline.decode(tiny_codec, rebuilt)
    except BitstreamError:
        assert rebuilt != fuzz_stream, "the untouched stream must decode"
        return
    assert len(decoded) == len(fuzz_reference)
    for got, ref in zip(decoded, fuzz_reference):
        assert torch.equal(got.y_hat, ref.y_hat), f"{kind}: decoded a different latent without an error"
        assert torch.equal(got.x_hat, ref.x_hat)


# ============================================================================ golden bitstreams
GOLDEN_FILE = GOLDEN_DIR / "bitstreams.json"
GOLDEN_MAP = [[2, 7], [9, 0]]


def _golden_streams(codec, image, arithmetic: str) -> dict[str, bytes]:
    before = codec.entropy_arithmetic
    codec.set_entropy_arithmetic(arithmetic)
    try:
        return {
            "tiny_seed0_synthetic128_q5": pipeline.encode(codec, image, 5),
            "tiny_seed0_synthetic128_q5_map2x2": pipeline.encode(codec, image, 5, quality_maps=[QualityMap(np.array(GOLDEN_MAP))]),
        }
    finally:
        codec.set_entropy_arithmetic(before)


def test_golden_bitstreams(tiny_codec, synthetic_image):
    """The fixed-seed tiny codec's bitstreams must not change unintentionally: float entropy arithmetic (version 2,
    what every writer before the fixed-point mode made) and fixed-point (version 3, kind ``learned_fixed``).

    Regenerate (after an intended format or model change) with
    ``COTAM_REGEN_GOLDEN=1 python -m pytest tests/test_container.py -k golden``.
    """
    image = synthetic_image  # 128×128 gradients + checkerboard + stripes, no RNG
    assert image.shape == (128, 128, 3)
    streams = _golden_streams(tiny_codec, image, "float")
    fixed = _golden_streams(tiny_codec, image, "fixed")

    def digest(group: dict[str, bytes]) -> dict[str, dict]:
        return {name: {"md5": hashlib.md5(data).hexdigest(), "bytes": len(data)} for name, data in group.items()}

    current, current_fixed = digest(streams), digest(fixed)
    if os.environ.get("COTAM_REGEN_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        # the same streams in format version 1 (its writer is gone: _as_version_1 rewrites the item headers)
        v1 = digest({name: _as_version_1(data) for name, data in streams.items()})
        GOLDEN_FILE.write_text(json.dumps({"quality_map": GOLDEN_MAP, "streams": current, "streams_fixed": current_fixed,
                                           "streams_v1": v1}, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"COTAM_REGEN_GOLDEN=1: rewrote {GOLDEN_FILE}")
    if not GOLDEN_FILE.is_file():
        pytest.fail(f"{GOLDEN_FILE} is missing; generate it with COTAM_REGEN_GOLDEN=1")
    golden = json.loads(GOLDEN_FILE.read_text())
    assert golden["quality_map"] == GOLDEN_MAP
    assert current == golden["streams"]
    assert current_fixed == golden["streams_fixed"]
    for name, data in streams.items():  # they decode, and as version 1 they are the files of that version, which decode
        assert parse(data).version == 2 and parse(fixed[name]).kind == CodecKind.LEARNED_FIXED
        reference = pipeline.decode(tiny_codec, data)[0]
        assert reference.to_pil().size == (128, 128)
        v1 = _as_version_1(data)
        assert {"md5": hashlib.md5(v1).hexdigest(), "bytes": len(v1)} == golden["streams_v1"][name]
        assert torch.equal(pipeline.decode(tiny_codec, v1)[0].x_hat, reference.x_hat)
        assert pipeline.decode(tiny_codec, fixed[name])[0].to_pil().size == (128, 128)


def _as_version_1(data: bytes) -> bytes:
    """The same container written in format version 1 (item CRCs without the item index)."""
    from cotam_llava.codec.container import _item_header

    container = parse(data)
    head = MAGIC + b"\x01" + container.codec_id + _varint(len(container.items))
    parts = [head + struct.pack("<I", zlib.crc32(head))]
    for item in container.items:
        header, payload = _item_header(item), b"".join(item.streams)
        parts += [header, struct.pack("<I", zlib.crc32(payload, zlib.crc32(header))), payload]
    return b"".join(parts)


def test_reordered_items_fail_the_item_crc(tiny_codec, synthetic_image):
    """Version 2 item CRCs cover the item's index: swapping two frames (CRCs and all) is caught."""
    data = pipeline.encode(tiny_codec, [synthetic_image, synthetic_image[::-1].copy()], 5, video=True)
    container = parse(data)
    assert len(container.items) == 2
    head_len = container.file_header_bytes
    first = container.items[0].header_bytes + container.items[0].payload_bytes
    swapped = data[:head_len] + data[head_len + first:] + data[head_len:head_len + first]
    with pytest.raises(ChecksumError, match="item 0"):
        parse(swapped)
    duplicated = data[:head_len] + data[head_len:head_len + first] * 2
    with pytest.raises(ChecksumError, match="item 1"):
        parse(duplicated)
