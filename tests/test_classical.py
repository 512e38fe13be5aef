"""Classical Pillow codecs behind the common ImageCodec interface."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cotam_llava.codec.classical import CLASSICAL_FORMATS, PillowCodec, classical_codec
from cotam_llava.codec.registry import ImageCodec, get_codec
from cotam_llava.errors import ConfigError, ImageInputError
from cotam_llava.imageio import psnr

HAS_JXL = importlib.util.find_spec("pillow_jxl") is not None

FORMATS = [
    "jpeg",
    "webp",
    "avif",
    pytest.param("jxl", marks=pytest.mark.skipif(not HAS_JXL, reason="pillow_jxl (pillow-jxl-plugin) is not installed")),
]

# The first bytes of a real file of each format.
SIGNATURES = {
    "jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "avif": lambda b: b[4:8] == b"ftyp" and b"avif" in b[8:32],
    "jxl": lambda b: b[:2] == b"\xff\x0a" or b[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n",
}


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_gives_the_original_shape(name, synthetic_factory):
    image = synthetic_factory(70, 100)  # odd-ish size: not a multiple of 8 or 16
    codec = get_codec(name)
    assert isinstance(codec, ImageCodec)
    data = codec.encode(image, 90)
    assert SIGNATURES[name](data), f"{name} did not write a {name} file: {data[:16]!r}"
    decoded = codec.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(image, decoded) > 20.0, "the decoded image should resemble the original"


@pytest.mark.parametrize("name", FORMATS)
def test_rate_falls_with_quality(name, kodak_image):
    codec = classical_codec(name)
    qualities = sorted(codec.default_qualities, reverse=True)
    sizes = [len(codec.encode(np.ascontiguousarray(kodak_image), q)) for q in qualities]
    assert all(b < a for a, b in zip(sizes, sizes[1:])), f"{name} sizes from q={qualities[0]} down: {sizes}"
    # …and so does the fidelity, from the best to the worst setting.
    best = psnr(kodak_image, codec.decode(codec.encode(np.ascontiguousarray(kodak_image), qualities[0])))
    worst = psnr(kodak_image, codec.decode(codec.encode(np.ascontiguousarray(kodak_image), qualities[-1])))
    assert best > worst


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("quality", [-1, 101, 1000])
def test_bad_quality_is_a_config_error(name, quality, synthetic_image):
    with pytest.raises(ConfigError):
        PillowCodec(name).encode(np.ascontiguousarray(synthetic_image), quality)


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_bad_inputs(name):
    codec = PillowCodec(name)
    with pytest.raises(ImageInputError):
        codec.encode(np.zeros((8, 8, 3), np.float32), 50)
    with pytest.raises(ImageInputError):
        codec.encode(np.zeros((8, 8), np.uint8), 50)
    with pytest.raises(ImageInputError):
        codec.decode(b"definitely not an image")


def test_unknown_codec_names():
    with pytest.raises(ConfigError, match="jpeg2000"):
        PillowCodec("jpeg2000")
    with pytest.raises(ConfigError, match="heic"):
        get_codec("heic")
    with pytest.raises(ConfigError, match="checkpoint"):
        get_codec("cotam-elic")


def test_default_qualities_are_valid_and_distinct():
    for name, (_, _, qualities, _) in CLASSICAL_FORMATS.items():
        assert len(set(qualities)) == len(qualities) >= 5, name
        assert all(0 <= q <= 100 for q in qualities), name


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header announces width × height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_an_image_input_error():
    # 40000 × 40000 announced in a ~100-byte file: Pillow raises DecompressionBombError,
    # which is not an OSError; decode must still raise the package's own error.
    with pytest.raises(ImageInputError):
        PillowCodec("jpeg").decode(_png_header_only(40000, 40000))
