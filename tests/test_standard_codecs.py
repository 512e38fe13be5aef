"""The standard intra base codecs (hevc via x265, av1 via SVT-AV1) in the .cotam container (codec.standard)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("av")

from conftest import GOLDEN_DIR  # noqa: E402

from cotam_llava.codec import pipeline, standard  # noqa: E402
from cotam_llava.codec.container import LEARNED_VERSION, MAGIC, CodecKind, parse, serialize  # noqa: E402
from cotam_llava.codec.quality_map import QualityMap  # noqa: E402
from cotam_llava.codec.registry import get_codec  # noqa: E402
from cotam_llava.errors import (  # noqa: E402
    BitstreamError,
    BitstreamFormatError,
    CodecMismatchError,
    ConfigError,
    SymbolMismatchError,
)
from cotam_llava.imageio import psnr  # noqa: E402

KINDS = ("hevc", "av1")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A textured 192×128 picture (deterministic sinusoids at several frequencies, like a photo's detail)."""
    yy, xx = np.mgrid[0:128, 0:192].astype(np.float64)
    r = 128 + 60 * np.sin(xx / 9.0) + 30 * np.sin((xx * yy) / 300.0)
    g = 128 + 50 * np.cos(yy / 6.0 + xx / 11.0) + 20 * np.sin(xx / 2.3)
    b = yy + 40 * np.sin((xx + yy) / 4.0) + 25 * np.cos(xx / 1.7)
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module", params=KINDS)
def coded(request, photo):
    codec = standard.StandardCodec(request.param)
    return codec, codec.encode(photo, 5)


# ---------------------------------------------------------------------------- round trips
def test_exact_decode_and_container_round_trip(coded, photo):
    codec, data = coded
    assert data[:4] == MAGIC and data[4] == 3 and data[5] == codec.container_kind
    container = parse(data)
    assert container.kind == codec.container_kind and container.codec_id == codec.codec_id
    assert serialize(copy.deepcopy(container)) == data
    [item] = container.items
    assert item.orig_size == (192, 128) and item.canvas_size == (192, 128) and len(item.streams) == 1
    first, second = standard.decode(data), standard.decode(data)
    assert np.array_equal(first[0].x_hat.numpy(), second[0].x_hat.numpy())  # the same pixels every time
    assert first[0].y_hat is None and first[0].quality.shape == (8, 12)
    arrays = standard.decode_arrays(data)
    assert np.array_equal(arrays[0], np.asarray(first[0].to_pil()))
    assert psnr(arrays[0], photo) > 25


def test_padded_and_resized_canvases(coded, photo):
    codec, _ = coded
    odd = np.ascontiguousarray(photo[:100, :150])
    [pad] = standard.decode(codec.encode(odd, 6))
    assert pad.item.canvas_size == (192, 128) and pad.to_pil().size == (150, 100)
    assert psnr(np.asarray(pad.to_pil()), odd) > 25
    [resized] = standard.decode(codec.encode(odd, 6, canvas=128))
    assert resized.item.canvas_size == (128, 128) and resized.x_hat.shape == (1, 3, 128, 128)
    assert resized.to_pil().size == (150, 100)


def test_video_frames_in_one_container(coded, photo):
    codec, _ = coded
    data = codec.encode([photo, photo[::-1].copy()], 4, video=True)
    frames = standard.decode(data)
    assert [f.item.is_video_frame for f in frames] == [True, True]
    assert not np.array_equal(frames[0].x_hat.numpy(), frames[1].x_hat.numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_rate_falls_with_quality(kind, photo):
    codec = standard.StandardCodec(kind)
    sizes = [len(codec.encode(photo, q)) for q in (0, 3, 6, 9)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4, sizes


def test_codec_id_covers_encoder_version_and_settings():
    from dataclasses import replace

    hevc = standard.StandardCodec("hevc")
    described = hevc.description()
    assert described["encoder"] == "libx265" and "x265" in described["encoder_version"]
    assert described["crf"] == list(standard.STANDARD_CODECS["hevc"].crf)
    other = standard.StandardCodec("hevc", replace(standard.STANDARD_CODECS["hevc"], preset="ultrafast"))
    assert len({hevc.codec_id, other.codec_id, standard.StandardCodec("av1").codec_id}) == 3


# ---------------------------------------------------------------------------- per-region quality
def test_raised_region_gets_more_bits_and_lowered_fewer(photo):
    codec = standard.StandardCodec("hevc")
    left = np.zeros((2, 2), dtype=np.int64)
    left[:, 0] = 1
    base = codec.encode(photo, 5)
    raised = codec.encode(photo, 5, [QualityMap(np.where(left, 8, 5))])
    lowered = codec.encode(photo, 5, [QualityMap(np.where(left, 2, 5))])
    assert len(raised) > 1.2 * len(base) and len(lowered) < 0.95 * len(base), (len(lowered), len(base), len(raised))
    rec = {name: standard.decode_arrays(data)[0] for name, data in (("base", base), ("raised", raised), ("lowered", lowered))}
    half = slice(0, 96)  # the region the map changed: its quality follows the map
    assert psnr(rec["raised"][:, half], photo[:, half]) > psnr(rec["base"][:, half], photo[:, half]) + 1
    assert psnr(rec["lowered"][:, half], photo[:, half]) < psnr(rec["base"][:, half], photo[:, half]) - 1
    [decoded] = standard.decode(raised)
    assert decoded.item.quality_map == QualityMap(np.where(left, 8, 5))
    assert decoded.quality[:, :6].min() == 8 and decoded.quality[:, 6:].max() == 5


def test_roi_rectangles_cover_exactly_the_changed_blocks():
    offsets = np.zeros((6, 8), dtype=np.int64)
    offsets[1:4, 2:5] = -6
    offsets[5, :] = 3
    offsets[0, 7] = -6
    rects = standard._roi_rectangles(offsets)
    painted = np.zeros_like(offsets)
    for x, y, w, h, off in rects:
        assert not painted[y:y + h, x:x + w].any()
        painted[y:y + h, x:x + w] = off
    assert np.array_equal(painted, offsets) and len(rects) == 3


def test_av1_refuses_a_quality_map(photo):
    codec = standard.StandardCodec("av1")
    with pytest.raises(ConfigError, match="no per-region quality"):
        codec.encode(photo, 5, [QualityMap(np.array([[2, 7]]))])


# ---------------------------------------------------------------------------- malformed and mismatched streams
def _recrafted(data: bytes, **changes) -> bytes:
    """The container with its first item changed (CRCs recomputed, as an attacker would)."""
    container = parse(data)
    item = container.items[0]
    for name, value in changes.items():
        setattr(item, name, value)
    return serialize(container)


def test_wrong_kind_is_a_codec_mismatch(coded, tiny_codec, synthetic_image):
    codec, data = coded
    with pytest.raises(CodecMismatchError, match=codec.kind):
        pipeline.decode(tiny_codec, data)
    learned = pipeline.encode(tiny_codec, synthetic_image, 5)  # fixed-point entropy parameters: version 3, kind 3
    assert learned[4] == 3 and parse(learned).kind == CodecKind.LEARNED_FIXED
    with pytest.raises(CodecMismatchError, match="learned"):
        standard.decode(learned)
    tiny_codec.set_entropy_arithmetic("float")
    try:
        learned = pipeline.encode(tiny_codec, synthetic_image, 5)
    finally:
        tiny_codec.set_entropy_arithmetic("fixed")
    assert learned[4] == LEARNED_VERSION  # float learned containers stay version 2, byte for byte
    with pytest.raises(CodecMismatchError, match="learned"):
        standard.decode(learned)
    other = "av1" if codec.kind == "hevc" else "hevc"
    with pytest.raises(CodecMismatchError, match=f"expected {other}"):
        standard.decode(data, kind=other)


def test_payload_of_the_other_kind_is_refused_before_ffmpeg(coded):
    codec, data = coded
    container = parse(data)
    container.kind = CodecKind.AV1 if codec.kind == "hevc" else CodecKind.HEVC
    with pytest.raises(BitstreamFormatError, match="AV1|HEVC"):
        standard.decode(serialize(container))


def test_truncated_payloads_are_our_errors(coded):
    codec, data = coded
    for n in range(0, len(data), max(1, len(data) // 97)):  # the container cut anywhere: the parser says so
        with pytest.raises(BitstreamError):
            standard.decode(data[:n])
    stream = parse(data).items[0].streams[0]
    reference = standard.decode_arrays(data)[0]
    for cut in sorted({1, 7, 8, 20, len(stream) // 3, len(stream) // 2}):
        crafted = _recrafted(data, streams=[stream[:cut]])  # lengths and CRCs consistent: only the picture is short
        with pytest.raises(BitstreamError):
            standard.decode(crafted)
    try:  # without its last byte (HEVC: the slice's stop bit) a picture may still decode: then to the same pixels
        assert np.array_equal(standard.decode_arrays(_recrafted(data, streams=[stream[:-1]]))[0], reference)
    except BitstreamError:
        pass


def test_corrupted_payloads_never_escape_as_foreign_errors(coded):
    codec, data = coded
    stream = parse(data).items[0].streams[0]
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(40):
        mutated = bytearray(stream)
        for pos in rng.integers(0, len(mutated), size=int(rng.integers(1, 4))):
            mutated[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            standard.decode(_recrafted(data, streams=[bytes(mutated)]))
            outcomes.add("decoded")  # a flip FFmpeg ignores (e.g. in padding) changes no pixel
        except BitstreamError as exc:
            outcomes.add(type(exc).__name__)
    assert outcomes - {"decoded"}, outcomes


def test_canvas_relabelled_is_refused_before_ffmpeg(coded):
    codec, data = coded
    with pytest.raises(BitstreamFormatError, match="canvas"):
        standard.decode(_recrafted(data, canvas_size=(256, 128), orig_size=(256, 128)))


def test_a_changed_crc_is_a_symbol_mismatch(coded):
    codec, data = coded
    item = parse(data).items[0]
    with pytest.raises(SymbolMismatchError, match="differs"):
        standard.decode(_recrafted(data, symbol_crc=item.symbol_crc ^ 1))


def test_extra_streams_and_levels_are_refused(coded):
    codec, data = coded
    item = parse(data).items[0]
    with pytest.raises(BitstreamFormatError, match="streams"):
        standard.decode(_recrafted(data, streams=[item.streams[0], b"\x00" * 8]))
    with pytest.raises(BitstreamFormatError, match="quality"):
        standard.decode(_recrafted(data, base_quality=12))


def test_unknown_kind_byte_is_a_format_error(coded):
    codec, data = coded
    head = bytearray(data[: parse(data).file_header_bytes - 4])
    head[5] = 9
    with pytest.raises(BitstreamFormatError, match="kind"):
        parse(bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[len(head) + 4:])


# ---------------------------------------------------------------------------- the ImageCodec interface
@pytest.mark.parametrize("kind", KINDS)
def test_registry_codec(kind, photo):
    codec = get_codec(kind)
    data = codec.encode(photo, 4)
    assert codec.decode(data).shape == photo.shape and codec.default_qualities == tuple(range(10))


# ---------------------------------------------------------------------------- golden streams
GOLDEN_STANDARD = GOLDEN_DIR / "standard.json"


@pytest.mark.parametrize("kind", KINDS)
def test_golden_standard_streams(kind, synthetic_image):
    """Stored hevc / av1 containers keep parsing and decoding to the same pixels; on this build the encoder
    still writes them byte for byte (skipped when the encoder, its version or settings differ: another codec id).

    Regenerate with ``COTAM_REGEN_GOLDEN=1 python -m pytest tests/test_standard_codecs.py -k golden``.
    """
    codec = standard.StandardCodec(kind)
    path = GOLDEN_DIR / f"{kind}_synthetic128_q5_map.cotam" if kind == "hevc" else GOLDEN_DIR / f"{kind}_synthetic128_q5.cotam"
    qmaps = [QualityMap(np.array([[2, 7], [9, 5]]))] if kind == "hevc" else None
    fresh = codec.encode(synthetic_image, 5, qmaps)
    if os.environ.get("COTAM_REGEN_GOLDEN") == "1":
        path.write_bytes(fresh)
        golden = json.loads(GOLDEN_STANDARD.read_text()) if GOLDEN_STANDARD.is_file() else {}
        golden[path.name] = {"md5": hashlib.md5(fresh).hexdigest(), "codec_id": codec.codec_id.hex(),
                             "pixels_md5": hashlib.md5(standard.decode_arrays(fresh)[0].tobytes()).hexdigest()}
        GOLDEN_STANDARD.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"COTAM_REGEN_GOLDEN=1: rewrote {path}")
    golden = json.loads(GOLDEN_STANDARD.read_text())[path.name]
    data = path.read_bytes()
    assert hashlib.md5(data).hexdigest() == golden["md5"]
    container = parse(data)
    assert container.version == 3 and container.kind.name.lower() == kind
    assert hashlib.md5(standard.decode_arrays(data)[0].tobytes()).hexdigest() == golden["pixels_md5"]
    if codec.codec_id.hex() != golden["codec_id"]:
        pytest.skip(f"another {kind} encoder build or settings ({codec.description()['encoder_version']})")
    assert fresh == data


def test_streams_of_earlier_hevc_settings_still_decode():
    """A stream x265 wrote with the settings shipped before 2026-12-08 (aq-strength 0, another CRF table, so
    another codec id) parses and decodes to the same pixels: decoding needs none of the encoder's settings."""
    name = "hevc_synthetic128_q5_map_aq0.cotam"
    golden = json.loads(GOLDEN_STANDARD.read_text())[name]
    data = (GOLDEN_DIR / name).read_bytes()
    assert hashlib.md5(data).hexdigest() == golden["md5"]
    assert parse(data).codec_id.hex() == golden["codec_id"] != standard.StandardCodec("hevc").codec_id.hex()
    assert hashlib.md5(standard.decode_arrays(data)[0].tobytes()).hexdigest() == golden["pixels_md5"]


# ---------------------------------------------------------------------------- the cotam command
@pytest.mark.parametrize("kind", KINDS)
def test_cli_encode_info_decode_without_checkpoint(kind, photo, tmp_path, capsys):
    from PIL import Image

    from cotam_llava.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray(np.ascontiguousarray(photo[:100, :150])).save(src)
    out = tmp_path / "photo.cotam"
    assert main(["encode", str(src), "-o", str(out), "--codec", kind, "--quality", "7", "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec_kind"] == kind and info["format_version"] == 3 and info["bytes"] == out.stat().st_size
    assert info["items"][0]["streams"] == 1 and info["items"][0]["base_quality"] == 7
    assert main(["decode", str(out), "-o", str(tmp_path / "dec.png"), "-q"]) == 0  # the kind comes from the header
    decoded = np.asarray(Image.open(tmp_path / "dec.png").convert("RGB"))
    assert np.array_equal(decoded, standard.decode_arrays(out.read_bytes())[0])
    assert main(["info", str(out)]) == 0
    assert f"{kind} codec" in capsys.readouterr().out


def test_cli_refusals(photo, tmp_path, capsys):
    from PIL import Image

    from cotam_llava.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray(photo).save(src)
    qmap = tmp_path / "map.json"
    qmap.write_text("[[2, 7]]")
    cases = [
        (["--codec", "av1", "--quality-map", str(qmap)], "no per-region quality"),
        (["--codec", "hevc", "--checkpoint", str(tmp_path)], "takes neither"),
        (["--codec", "hevc", "--quality", "10"], "quality"),
    ]
    for extra, message in cases:
        assert main(["encode", str(src), "-o", str(tmp_path / "x.cotam"), *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
