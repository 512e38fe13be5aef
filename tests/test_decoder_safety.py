"""The cloud decoder against crafted input: bounded rANS decoding, budgets, and fuzzing with valid CRCs.

Crafted whole streams are decoded in a worker process (``cotam_llava.evaluation.fuzz.FuzzWorker``), so a
crash or a hang fails a test instead of killing pytest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cotam_llava.codec import pipeline, rans
from cotam_llava.codec.container import ParseLimits, parse, serialize
from cotam_llava.errors import (
    BitstreamFormatError,
    BitstreamLimitError,
    ConfigError,
    EntropyDecodingError,
    SymbolMismatchError,
)
from cotam_llava.evaluation.fuzz import CRAFTERS, FuzzWorker, craft_cases, decode_outcome, reference_streams, run_fuzz


@pytest.fixture(scope="module")
def tables(tiny_codec):
    gc = tiny_codec.gaussian_conditional
    return gc._quantized_cdf.tolist(), gc._cdf_length.tolist(), gc._offset.tolist()


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_codec, tmp_path_factory):
    return tiny_codec.save_pretrained(tmp_path_factory.mktemp("tiny_fuzz"))


@pytest.fixture(scope="module")
def references(tiny_codec):
    return reference_streams(tiny_codec)


# ============================================================================ the rANS decoder itself
def test_safe_decoder_reads_compressai_streams_exactly(tables):
    """Same symbols as the encoder (CompressAI's), escape codes of large values included."""
    from compressai import ans

    cdf, lengths, offsets = tables
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(lengths), 5000).astype(np.int32).tolist()
    sym = (rng.standard_t(1.5, 5000) * 4).astype(np.int32)
    sym[:6] = [2**27, -(2**27), 10**6, -(10**6), 12345, 0]
    sym = sym.tolist()
    stream = ans.RansEncoder().encode_with_indexes(sym, idx, cdf, lengths, offsets)
    assert rans.decode_with_indexes(stream, idx, cdf, lengths, offsets).tolist() == sym
    assert ans.RansDecoder().decode_with_indexes(stream, idx, cdf, lengths, offsets) == sym


def test_safe_decoder_rejects_every_cut_and_extension(tables):
    from compressai import ans

    cdf, lengths, offsets = tables
    idx = [i % len(lengths) for i in range(300)]
    sym = [(i * 7) % 5 - 2 for i in range(300)]
    stream = ans.RansEncoder().encode_with_indexes(sym, idx, cdf, lengths, offsets)
    for n in range(len(stream)):
        with pytest.raises(EntropyDecodingError):
            rans.decode_with_indexes(stream[:n], idx, cdf, lengths, offsets)
    for extra in (b"\0\0\0\0", b"\xff" * 4, stream):
        with pytest.raises(EntropyDecodingError):
            rans.decode_with_indexes(stream + extra, idx, cdf, lengths, offsets)


def test_safe_decoder_rejects_bad_indexes_and_tables(tables):
    cdf, lengths, offsets = tables
    stream = bytes(8)
    with pytest.raises(EntropyDecodingError, match="CDF index"):
        rans.decode_with_indexes(b"\0\0\0\x80" + bytes(4), [len(lengths)], cdf, lengths, offsets)
    with pytest.raises(EntropyDecodingError, match="table"):
        rans.decode_with_indexes(b"\xff\xff\0\x80" + bytes(4), [0], [[0] * len(cdf[0])], [lengths[0]], [0])
    with pytest.raises(EntropyDecodingError, match="one entry per"):
        rans.decode_with_indexes(stream, [0], cdf, lengths[:-1], offsets)
    with pytest.raises(EntropyDecodingError, match="32-bit words"):
        rans.decode_with_indexes(stream[:7], [0], cdf, lengths, offsets)


# ============================================================================ checks before work
def test_empty_streams_on_a_large_canvas_are_rejected_before_decoding(tiny_codec, synthetic_image):
    data = pipeline.encode(tiny_codec, synthetic_image, 5)
    c = parse(data)
    item = replace(c.items[0], orig_size=(2048, 2048), canvas_size=(2048, 2048), streams=[b""] * len(c.items[0].streams))
    start = time.perf_counter()
    with pytest.raises(BitstreamFormatError, match="stream 0 has 0 bytes"):
        pipeline.decode(tiny_codec, serialize(replace(c, items=[item])))
    assert time.perf_counter() - start < 0.5


def test_symbol_checksum_is_compared_before_synthesis(tiny_codec, synthetic_image, monkeypatch):
    data = pipeline.encode(tiny_codec, synthetic_image, 5)
    c = parse(data)
    bad = serialize(replace(c, items=[replace(c.items[0], symbol_crc=c.items[0].symbol_crc ^ 1)]))

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesis ran before the symbol checksum was compared")

    monkeypatch.setattr(tiny_codec, "synthesis", no_synthesis)
    with pytest.raises(SymbolMismatchError, match="item 0"):
        pipeline.decode(tiny_codec, bad)


def test_container_pixel_and_item_budgets(tiny_codec, synthetic_image):
    data = pipeline.encode(tiny_codec, [synthetic_image] * 3, 5, video=True)  # 3 × 128² canvases
    pipeline.decode(tiny_codec, data, ParseLimits(max_total_pixels=3 * 128 * 128))
    with pytest.raises(BitstreamLimitError, match="max_total_pixels"):
        parse(data, ParseLimits(max_total_pixels=3 * 128 * 128 - 1))
    with pytest.raises(BitstreamLimitError, match="items"):
        parse(data, ParseLimits(max_items=2))
    with pytest.raises(ValueError, match="positive"):
        ParseLimits(max_items=0)


def test_items_are_decoded_one_at_a_time(tiny_codec, synthetic_image):
    """iter_decode hands out the first picture before it decodes (and fails on) the second."""
    data = pipeline.encode(tiny_codec, [synthetic_image, synthetic_image], 5, video=True)
    c = parse(data)
    streams = list(c.items[1].streams)
    streams[-1] = bytes(len(streams[-1]))  # z stream zeroed, same size: passes every check before decoding
    crafted = serialize(replace(c, items=[c.items[0], replace(c.items[1], streams=streams)]))
    frames = pipeline.iter_decode(tiny_codec, crafted)
    first = next(frames)
    assert torch.equal(first.x_hat, pipeline.decode(tiny_codec, data)[0].x_hat)
    with pytest.raises(EntropyDecodingError, match="item 1"):
        next(frames)


def test_image_file_size_is_checked_from_its_header(tmp_path, tiny_codec):
    """A small PNG declaring 8000² is refused at native resolution before its pixels are decoded."""
    path = tmp_path / "big.png"
    Image.new("1", (8000, 8000)).save(path)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="exceeds"):
            pipeline.compress_image(tiny_codec, path, 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_decoding_is_exact_across_thread_counts(tiny_codec, synthetic_image):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = pipeline.encode(tiny_codec, synthetic_image, 7)
        ref = pipeline.decode(tiny_codec, data)[0]
        torch.set_num_threads(1)
        assert torch.equal(pipeline.decode(tiny_codec, data)[0].y_hat, ref.y_hat)
    finally:
        torch.set_num_threads(threads)


# ============================================================================ fuzzing, isolated
def test_fuzz_run_has_no_crash_hang_or_foreign_exception(tiny_ckpt, tiny_codec, references):
    n = 12 * len(CRAFTERS)
    report = run_fuzz(tiny_ckpt, craft_cases(references, n, seed=1), batch=n // 6, batch_timeout=300, workers=2)
    assert report.cases == n
    assert set(report.outcomes) == set(CRAFTERS)
    assert report.bad == 0, report.table()
    assert sum(c["decoded"] for c in report.outcomes.values()) < n  # the crafters do reach the errors
    # two workers count exactly what one process decoding the same cases in order finds
    expected: dict[str, Counter] = defaultdict(Counter)
    for name, data in craft_cases(references, n, seed=1):
        expected[name][decode_outcome(tiny_codec, data)] += 1
    assert {k: dict(v) for k, v in report.outcomes.items()} == {k: dict(v) for k, v in expected.items()}


@pytest.fixture(scope="module")
def worker(tiny_ckpt):
    with FuzzWorker(tiny_ckpt) as w:
        yield w


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 3))
def test_crafted_streams_with_valid_crcs_never_crash(worker, references, seed, count):
    cases = [data for _, data in craft_cases(references, count * len(CRAFTERS), seed)]
    results = worker.decode(cases, timeout=120)
    assert results is not None, f"the decoder {worker.last_failure}ed on crafter seed {seed}"
    for outcome, _ in results:
        assert not outcome.startswith("bug:"), outcome


def test_encoders_refuse_a_canvas_their_decoders_would_refuse(tiny_codec, synthetic_image):
    """A canvas beyond the default ParseLimits is refused before coding, by the learned and the standard encoder."""
    from cotam_llava.codec.standard import StandardCodec

    with pytest.raises(ConfigError, match="exceeds what decoders accept"):
        pipeline.encode(tiny_codec, synthetic_image, 5, canvas=4096)
    with pytest.raises(ConfigError, match="exceeds what decoders accept"):
        StandardCodec("hevc").compress_image(synthetic_image, 5, canvas=4096)
