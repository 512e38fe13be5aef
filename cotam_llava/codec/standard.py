"""Standard intra codecs (HEVC through x265, AV1 through SVT-AV1) as CoTAM base codecs, through PyAV.

The learned base is one of CoTAM's possible bases; edge devices already carry HEVC and AV1 encoders. Here
each image (or sampled video frame) is coded as one intra picture and stored as one item of a ``.cotam``
container of kind ``hevc`` or ``av1`` (format version 3), with the same canvas and resize rules, the same
quality levels 0 (fewest bits) … 9 (best) and the same :class:`~cotam_llava.codec.quality_map.QualityMap`::

    edge:  image ─(pad to ×64 | bicubic resize to the canvas)─▶ RGB canvas ─swscale (BT.601 full range,
           bit-exact)─▶ YUV 4:2:0 ─[addroi per map region: QP offset = crf[level] − crf[base]]─▶
           x265 / SVT-AV1 at crf[base] ─▶ one intra picture ─(decoded once: CRC32 of its YUV planes)─▶ CodedItem
    cloud: bytes ─container.parse─▶ item ─checks (one stream, NAL/OBU structure, coded size = the canvas,
           from the SPS / sequence header, before FFmpeg sees a byte)─▶ FFmpeg hevc / libdav1d ─▶ YUV
           ─check the CRC─▶ RGB canvas ─▶ DecodedImage (x̂; no latent: ``y_hat`` is None)

Per-region quality: x265 takes per-16×16-block QP offsets from FFmpeg's region-of-interest side data
(made by the ``addroi`` filter; x265's adaptive quantisation must be on). SVT-AV1 has no per-region
quality through FFmpeg in this build: it ignores ROI side data and its ``roi-map-file`` parameter
(measured: identical bytes), so ``av1`` refuses quality maps rather than store a map it did not realise.

The codec id (8 bytes, in the container header) is the first 8 bytes of SHA-256 over the canonical JSON
of :meth:`StandardCodec.description`: kind, encoder, the encoder's version, PyAV's and libavcodec's
versions and every setting. Decoding needs none of it (any conformant decoder reads the pictures); it
names what made the stream.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import (
    BitstreamFormatError,
    CodecMismatchError,
    ConfigError,
    CoTAMError,
    ImageInputError,
    SymbolMismatchError,
)
from .container import CodecKind, CodedItem, Container, ParseLimits, ResizeMode, canvas_for, encodable_canvas, parse, serialize
from .quality_map import QualityMap

__all__ = [
    "STANDARD_CODECS",
    "StandardCodecSettings",
    "StandardCodec",
    "decode",
    "iter_decode",
    "iter_decode_container",
    "decode_container",
    "decode_arrays",
    "is_standard_kind",
    "STANDARD_MODEL_TYPE",
]

NUM_QUALITIES = 10
#: ``model_type`` of a standard codec's ``config.json`` (a CoTAM model folder's ``codec/``).
STANDARD_MODEL_TYPE = "cotam-standard"
#: x265's QP range for 8-bit video; FFmpeg scales an ROI's qoffset in [-1, 1] by it.
_X265_QP_RANGE = 51


@dataclass(frozen=True)
class StandardCodecSettings:
    """Everything that decides a standard base codec's bytes (all of it goes into the codec id).

    Args:
        kind: ``hevc`` or ``av1``.
        encoder: the FFmpeg encoder (``libx265``, ``libsvtav1``).
        decoder: the FFmpeg decoder (``hevc``, ``libdav1d``).
        preset: the encoder's speed preset.
        crf: the CRF of each quality level 0..9 (descending: level 9 is the best).
        params: the encoder's own parameters (``x265-params`` / ``svtav1-params``), as key → value.
        supports_map: whether per-region quality (a QualityMap) is realised.
    """

    kind: str
    encoder: str
    decoder: str
    preset: str
    crf: tuple[int, ...]
    params: tuple[tuple[str, str], ...] = ()
    supports_map: bool = False
    pix_fmt: str = "yuv420p"

    def __post_init__(self) -> None:
        if len(self.crf) != NUM_QUALITIES or any(b >= a for a, b in zip(self.crf, self.crf[1:])):
            raise ConfigError(f"{self.kind}: crf needs {NUM_QUALITIES} strictly descending values, got {self.crf}")

    @property
    def params_key(self) -> str:
        return {"libx265": "x265-params", "libsvtav1": "svtav1-params"}[self.encoder]


#: The shipped settings, chosen on the held-out training photos (``eval/standard_presets.py``, results in
#: ``eval/results/standard_presets``): the preset with the best PSNR BD-rate among those of about AVIF's speed
#: or less (x265: superfast, 2.6 % better than faster/fast/medium, which code intra pictures alike; SVT-AV1: 6),
#: x265's AQ strength by real DINOv2-S tokens (``--metric tokens``, ``eval/results/standard_presets_tokens``),
#: and the CRF of each level on a geometric rate ladder from 0.1 to 3 bpp, about the learned codec's span.
#: Streams of earlier settings (hevc before 2026-12-08: aq-strength 0, CRF 51 … 21) decode unchanged: the
#: decoder needs none of them. See docs/bitstream.md.
STANDARD_CODECS: dict[str, StandardCodecSettings] = {
    "hevc": StandardCodecSettings(
        kind="hevc", encoder="libx265", decoder="hevc", preset="superfast",
        crf=(48, 46, 43, 41, 38, 35, 32, 28, 24, 19),
        # info=0: no SEI with the encoder's banner (≈ 1.5 kB per picture); aq-mode=1: block QP offsets need AQ;
        # aq-strength 1.5: superfast sets 0 (AQ adapting nothing); chosen on real DINOv2-S tokens of held-out
        # photos (``eval/standard_presets.py --metric tokens``: −24 % BD-rate on token cosine against 0).
        params=(("log-level", "error"), ("info", "0"), ("aq-mode", "1"), ("aq-strength", "1.5")),
        supports_map=True,
    ),
    "av1": StandardCodecSettings(
        kind="av1", encoder="libsvtav1", decoder="libdav1d", preset="6",
        crf=(57, 54, 50, 46, 41, 37, 31, 24, 14, 7),
        params=(("avif", "1"),),  # SVT-AV1's still-picture mode (all-intra tools, no TPL)
        supports_map=False,
    ),
}

_KINDS = {"hevc": CodecKind.HEVC, "av1": CodecKind.AV1}


def is_standard_kind(kind: CodecKind) -> bool:
    return kind in (CodecKind.HEVC, CodecKind.AV1)


def _av():
    try:
        import av
    except ImportError as exc:  # optional at import time, required here
        raise CoTAMError("the hevc / av1 base codecs need PyAV: pip install av==18.1.0") from exc
    return av


# ---------------------------------------------------------------------------- versions (for the codec id)
@functools.lru_cache(maxsize=None)
def _bundled_library(prefix: str) -> str | None:
    """The file name of a library bundled with the PyAV wheel (``libSvtAv1Enc-….so.4.1.0``), else None."""
    av = _av()
    root = Path(av.__file__).resolve().parent
    for folder in (root.parent / "av.libs", root / ".dylibs", root.parent / "av.dylibs"):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name.startswith(prefix):
                    name = path.name
                    stem, _, rest = name.partition(".")  # drop the wheel's hash suffix: libX-1a2b3c4d.so.4 → libX.so.4
                    return stem.rsplit("-", 1)[0] + "." + rest if "-" in stem else name
    return None


@functools.lru_cache(maxsize=None)
def encoder_version(encoder: str) -> str:
    """The encoder library's version as this build reports it.

    x265 writes it into an SEI of every stream unless ``info=0``: one 64×64 probe encode reads it
    ("x265 (build 216) - 4.1+1-…"). SVT-AV1 reports its version only in log lines, so the file name of
    the library bundled with PyAV stands for it ("libSvtAv1Enc.so.4.1.0").
    """
    if encoder == "libx265":
        data = _encode_yuv(STANDARD_CODECS["hevc"], np.full((64, 64, 3), 128, np.uint8), 30, [], info=True)
        start = data.find(b"x265 (build")
        if start >= 0:
            end = min(i for i in (data.find(b":", start), data.find(b" - H.265", start), start + 80) if i > start)
            return data[start:end].decode("ascii", "replace")
        return "x265 (version not reported)"
    library = {"libsvtav1": "libSvtAv1Enc"}.get(encoder)
    return (_bundled_library(library) if library else None) or f"{encoder} (version not reported)"


# ---------------------------------------------------------------------------- encoding
_COLOR = "bt601-full"  # what the container's standard kinds mean by RGB ↔ YUV (both ends, fixed)


def _interpolation():
    from av.video.reformatter import Interpolation

    # BITEXACT: swscale's C reference path, the same output on every CPU; ACCURATE_RND: exact rounding.
    return Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT | Interpolation.FULL_CHR_H_INT


def _roi_rectangles(offsets: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Rectangles (x, y, w, h in 16-px blocks, QP offset) covering the non-zero cells of a block grid.

    Runs of equal offset along each block row, merged with the identical runs of the rows below.
    """
    open_runs: dict[tuple[int, int, int], list[int]] = {}  # (x, w, offset) → [y, h]
    done: list[tuple[int, int, int, int, int]] = []
    for y, row in enumerate(offsets):
        runs, x = set(), 0
        while x < len(row):
            end = x
            while end < len(row) and row[end] == row[x]:
                end += 1
            if row[x]:
                runs.add((x, end - x, int(row[x])))
            x = end
        for key in list(open_runs):
            if key not in runs:
                (x0, w0, off), (y0, h0) = key, open_runs.pop(key)
                done.append((x0, y0, w0, h0, off))
        for key in runs:
            if key in open_runs:
                open_runs[key][1] += 1
            else:
                open_runs[key] = [y, 1]
    for (x0, w0, off), (y0, h0) in open_runs.items():
        done.append((x0, y0, w0, h0, off))
    return sorted(done, key=lambda r: (r[1], r[0]))


def _with_roi(frame, rectangles: list[tuple[int, int, int, int, int]]):
    """``frame`` with FFmpeg region-of-interest side data, one ``addroi`` filter per rectangle."""
    if not rectangles:
        return frame
    av = _av()
    graph = av.filter.Graph()
    last = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=Fraction(1, 1))
    for x, y, w, h, offset in rectangles:
        node = graph.add("addroi", f"x={16 * x}:y={16 * y}:w={16 * w}:h={16 * h}:qoffset={offset}/{_X265_QP_RANGE}")
        last.link_to(node)
        last = node
    sink = graph.add("buffersink")
    last.link_to(sink)
    graph.configure()
    frame.pts = 0
    graph.push(frame)
    out = graph.pull()
    return out


def _encode_yuv(settings: StandardCodecSettings, rgb: np.ndarray, crf: int,
                rectangles: list[tuple[int, int, int, int, int]], info: bool = False) -> bytes:
    """One intra picture of the RGB canvas ``rgb`` (H, W, 3) at ``crf``, with per-block QP offsets."""
    av = _av()
    from av.video.reformatter import ColorRange, Colorspace

    height, width = rgb.shape[:2]
    params = dict(settings.params)
    if info:
        params.pop("info", None)
    ctx = av.CodecContext.create(settings.encoder, "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = settings.pix_fmt
    ctx.time_base = Fraction(1, 1)
    ctx.color_range = ColorRange.JPEG
    ctx.colorspace = Colorspace.ITU601
    options = {"preset": settings.preset, "crf": str(crf)}
    if params:
        options[settings.params_key] = ":".join(f"{k}={v}" for k, v in params.items())
    ctx.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = frame.reformat(format=settings.pix_fmt, dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.JPEG,
                           interpolation=_interpolation())
    frame = _with_roi(frame, rectangles)
    frame.pts = 0
    if settings.encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner on every encoder unless told not to
    try:
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    except av.error.FFmpegError as exc:
        raise CoTAMError(f"{settings.encoder} failed to encode a {width}×{height} picture: {exc}") from exc
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise CoTAMError(f"{settings.encoder} produced no bytes for a {width}×{height} picture")
    return data


def _to_canvas(image: Any, canvas: int | tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], ResizeMode]:
    """The image as a uint8 (Hc, Wc, 3) canvas: replicate-padded to ×64, or bicubic-resized (the learned codec's rules)."""
    from PIL import Image

    from ..imageio import to_uint8_array

    arr = to_uint8_array(image)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageInputError("image is empty")
    orig = (int(arr.shape[1]), int(arr.shape[0]))
    size, mode = canvas_for(orig, canvas)
    if mode == ResizeMode.PAD:
        arr = np.pad(arr, ((0, size[1] - orig[1]), (0, size[0] - orig[0]), (0, 0)), mode="edge")
    else:
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.BICUBIC), dtype=np.uint8)
    return np.ascontiguousarray(arr), orig, size, mode


@dataclass
class StandardCodec:
    """A standard intra codec (``hevc`` or ``av1``) as a CoTAM base codec: the same levels, maps and container.

    Args:
        kind: ``hevc`` or ``av1``.
        settings: override the shipped :data:`STANDARD_CODECS` entry (the codec id changes with them).
    """

    kind: str
    settings: StandardCodecSettings | None = None
    _codec_id: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in STANDARD_CODECS:
            raise ConfigError(f"unknown standard codec {self.kind!r}; choose from {', '.join(STANDARD_CODECS)}")
        if self.settings is None:
            self.settings = STANDARD_CODECS[self.kind]
        if self.settings.kind != self.kind:
            raise ConfigError(f"settings for {self.settings.kind} given to a {self.kind} codec")
        av = _av()
        for name, mode in ((self.settings.encoder, "w"), (self.settings.decoder, "r")):
            try:
                av.codec.Codec(name, mode)
            except Exception as exc:  # UnknownCodecError: this FFmpeg build lacks it
                raise CoTAMError(f"this PyAV/FFmpeg build has no {name} {'encoder' if mode == 'w' else 'decoder'} "
                                 f"(pip install av==18.1.0 has both)") from exc

    @property
    def container_kind(self) -> CodecKind:
        return _KINDS[self.kind]

    @property
    def num_qualities(self) -> int:
        return NUM_QUALITIES

    @property
    def supports_map(self) -> bool:
        return self.settings.supports_map

    def description(self) -> dict[str, Any]:
        """What the codec id is the hash of: kind, encoder and versions, every setting."""
        av = _av()
        s = self.settings
        return {
            "format": "cotam-standard-codec/1",
            "kind": s.kind,
            "encoder": s.encoder,
            "encoder_version": encoder_version(s.encoder),
            "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "preset": s.preset,
            "crf": list(s.crf),
            "params": dict(s.params),
            "pix_fmt": s.pix_fmt,
            "color": _COLOR,
            "roi": f"addroi qoffset = (crf[level] - crf[base]) / {_X265_QP_RANGE}" if s.supports_map else None,
        }

    @property
    def codec_id(self) -> bytes:
        if self._codec_id is None:
            text = json.dumps(self.description(), sort_keys=True, separators=(",", ":"))
            self._codec_id = hashlib.sha256(text.encode()).digest()[:8]
        return self._codec_id

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` naming this codec (``model_type`` ``cotam-standard``, its kind, id and description)
        so a CoTAM model folder's ``codec/`` can hold a standard base like a learned one. No weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        doc = {"model_type": STANDARD_MODEL_TYPE, "kind": self.kind, "codec_id": self.codec_id.hex(),
               "description": self.description()}
        (directory / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: Any = None) -> "StandardCodec":
        """The codec a ``save_pretrained`` folder names. Only the shipped settings of its kind are built: encoder
        parameters from a downloaded file never reach x265 / SVT-AV1. A different codec id (another encoder
        build) is a warning: any build decodes the pictures, but an adapter saw that build's artefacts."""
        import warnings

        from .._config import read_json

        path = Path(directory) / "config.json"
        doc = read_json(path, "standard codec config")
        if not isinstance(doc, dict) or doc.get("model_type") != STANDARD_MODEL_TYPE:
            raise ConfigError(f"{path} is not a standard codec config (model_type {STANDARD_MODEL_TYPE!r})")
        kind = doc.get("kind")
        if not isinstance(kind, str) or kind not in STANDARD_CODECS:
            raise ConfigError(f"{path}: unknown standard codec kind {kind!r}; known: {', '.join(STANDARD_CODECS)}")
        codec = cls(kind)
        saved = doc.get("codec_id")
        if isinstance(saved, str) and saved != codec.codec_id.hex():
            warnings.warn(f"{path} was saved with {kind} codec id {saved}; this machine's encoder build makes "
                          f"{codec.codec_id.hex()} (streams decode either way)", stacklevel=2)
        return codec

    def check_quality(self, quality: int) -> int:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 0 <= quality < NUM_QUALITIES:
            raise ConfigError(f"quality must be an integer level in [0, {NUM_QUALITIES - 1}], got {quality!r}")
        return int(quality)

    def block_offsets(self, quality: int, quality_map: QualityMap | None, blocks: tuple[int, int]) -> np.ndarray:
        """Per-16×16-block QP offsets (h, w) int: crf[cell level] − crf[base] (negative: more bits)."""
        h, w = blocks
        if quality_map is None:
            return np.zeros((h, w), dtype=np.int64)
        crf = np.asarray(self.settings.crf, dtype=np.int64)
        return crf[quality_map.expand(h, w).astype(np.int64)] - crf[quality]

    def compress_image(
        self,
        image: Any,
        quality: int,
        quality_map: QualityMap | None = None,
        canvas: int | tuple[int, int] | None = None,
        is_video_frame: bool = False,
    ) -> CodedItem:
        """Code one image as one intra picture (see the module docstring); the item's CRC is of the decoded YUV.

        Args:
            image: a path, PIL image, uint8 (H, W, 3) array or float (3, H, W) tensor.
            quality: base level in [0, 9].
            quality_map: per-region levels (``hevc`` only): QP offsets per 16×16 block.
            canvas: None for native resolution (padded to ×64), an int or (width, height) to resize to.
        """
        return self._code(image, quality, quality_map, canvas, is_video_frame)[0]

    def roundtrip(self, image: Any, quality: int, quality_map: QualityMap | None = None,
                  canvas: int | tuple[int, int] | None = None) -> tuple[CodedItem, np.ndarray]:
        """Code one image and return the item with the cloud's RGB canvas (Hc, Wc, 3) uint8 — the encoder's own
        decode, which the item's CRC is of, so no second decode runs (the adapter trainer's per-sample coding)."""
        item, yuv = self._code(image, quality, quality_map, canvas, False)
        return item, _yuv_to_rgb(yuv)

    def _code(self, image: Any, quality: int, quality_map: QualityMap | None, canvas: int | tuple[int, int] | None,
              is_video_frame: bool) -> tuple[CodedItem, Any]:
        from ..imageio import image_size

        quality = self.check_quality(quality)
        if quality_map is not None:
            if not self.supports_map:
                raise ConfigError(
                    f"{self.kind} has no per-region quality here: SVT-AV1 through FFmpeg ignores region-of-interest "
                    "side data and its roi-map-file (measured), so a quality map (--guidance, --quality-map) would be "
                    "stored but not realised; use --codec hevc for guided coding"
                )
            if quality_map.levels()[-1] >= NUM_QUALITIES:
                raise ConfigError(f"quality map uses level {quality_map.levels()[-1]}; levels are 0–{NUM_QUALITIES - 1}")
        encodable_canvas(image_size(image), canvas)  # from the file's header: before any pixel is decoded
        rgb, orig, size, mode = _to_canvas(image, canvas)
        offsets = self.block_offsets(quality, quality_map, (size[1] // 16, size[0] // 16))
        data = _encode_yuv(self.settings, rgb, self.settings.crf[quality], _roi_rectangles(offsets))
        item = CodedItem(
            orig_size=orig, canvas_size=size, resize_mode=mode, base_quality=quality, quality_map=quality_map,
            streams=[data], symbol_crc=0, is_video_frame=is_video_frame,
        )
        yuv = _decode_yuv(self.container_kind, item, "the encoder's own picture")
        item.symbol_crc = zlib.crc32(yuv.to_ndarray().tobytes())
        return item, yuv

    def encode(
        self,
        images: Any,
        quality: int = 6,
        quality_maps: Sequence[QualityMap | None] | None = None,
        canvas: int | tuple[int, int] | None = None,
        video: bool = False,
    ) -> bytes:
        """Encode one image or a sequence of images (or video frames) into one ``.cotam`` container."""
        if isinstance(images, (str, bytes, Path)) or not isinstance(images, Sequence):
            images = [images]
        if not images:
            raise ImageInputError("no images to encode")
        if quality_maps is not None and len(quality_maps) != len(images):
            raise ConfigError(f"{len(quality_maps)} quality maps for {len(images)} images")
        items = [
            self.compress_image(image, quality, quality_maps[i] if quality_maps is not None else None, canvas, video)
            for i, image in enumerate(images)
        ]
        return serialize(Container(codec_id=self.codec_id, items=items, kind=self.container_kind))


# ---------------------------------------------------------------------------- payload checks (before FFmpeg)
class _Bits:
    """MSB-first bit reader over bytes; every read is bounds-checked."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def u(self, n: int) -> int:
        if self.pos + n > 8 * len(self.data):
            raise BitstreamFormatError(f"{self.what} ends early")
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamFormatError(f"{self.what}: an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def uvlc(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros >= 32:
                raise BitstreamFormatError(f"{self.what}: a uvlc code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)


_HEVC_ALLOWED_NALS = {19: "IDR_W_RADL", 20: "IDR_N_LP", 32: "VPS", 33: "SPS", 34: "PPS", 35: "AUD", 39: "SEI", 40: "SEI"}
_MAX_NALS = 256


def _hevc_nals(data: bytes, what: str) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    if not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
        raise BitstreamFormatError(f"{what}: not an HEVC byte stream (no start code)")
    starts, pos = [], 0
    while True:
        pos = data.find(b"\x00\x00\x01", pos)
        if pos < 0:
            break
        starts.append(pos + 3)
        if len(starts) > _MAX_NALS:
            raise BitstreamFormatError(f"{what}: more than {_MAX_NALS} NAL units in one picture")
        pos += 3
    nals = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nals.append(data[start:end].rstrip(b"\x00") if i + 1 < len(starts) else data[start:end])
    return nals


def _unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: emulation-prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _check_hevc(data: bytes, canvas: tuple[int, int], what: str) -> None:
    """One 8-bit 4:2:0 IDR picture whose every SPS codes exactly the canvas; anything else is refused."""
    sps_count = pictures = 0
    for nal in _hevc_nals(data, what):
        if len(nal) < 2:
            raise BitstreamFormatError(f"{what}: an HEVC NAL unit shorter than its header")
        forbidden, nal_type = nal[0] >> 7, (nal[0] >> 1) & 0x3F
        layer, tid = ((nal[0] & 1) << 5) | (nal[1] >> 3), nal[1] & 7
        if forbidden or layer or tid != 1:
            raise BitstreamFormatError(f"{what}: an HEVC NAL header this codec never writes (layer {layer}, tid {tid})")
        if nal_type not in _HEVC_ALLOWED_NALS:
            raise BitstreamFormatError(f"{what}: HEVC NAL unit type {nal_type} (an intra picture has "
                                       f"{', '.join(sorted(set(_HEVC_ALLOWED_NALS.values())))})")
        if nal_type in (19, 20):
            if len(nal) < 3:
                raise BitstreamFormatError(f"{what}: an empty HEVC slice")
            pictures += nal[2] >> 7  # first_slice_segment_in_pic_flag
        elif nal_type == 33:
            sps_count += 1
            bits = _Bits(_unescape(nal[2:]), f"{what}: the HEVC SPS")
            bits.u(4)  # sps_video_parameter_set_id
            if bits.u(3) != 0:
                raise BitstreamFormatError(f"{what}: an HEVC SPS with temporal sub-layers")
            bits.u(1)
            bits.u(96)  # profile_tier_level(1, 0): general profile (88 bits) and level (8 bits)
            if bits.ue() > 15:
                raise BitstreamFormatError(f"{what}: HEVC SPS id out of range")
            chroma = bits.ue()
            if chroma != 1:
                raise BitstreamFormatError(f"{what}: HEVC chroma format {chroma} (this codec codes 4:2:0)")
            width, height = bits.ue(), bits.ue()
            if (width, height) != tuple(canvas):
                raise BitstreamFormatError(f"{what}: the HEVC picture is {width}×{height}, the container's canvas "
                                           f"{canvas[0]}×{canvas[1]}")
            if bits.u(1):  # conformance window
                if any(bits.ue() for _ in range(4)):
                    raise BitstreamFormatError(f"{what}: an HEVC conformance window (this codec codes the whole canvas)")
            if bits.ue() != 0 or bits.ue() != 0:
                raise BitstreamFormatError(f"{what}: HEVC bit depth beyond 8 (this codec codes 8-bit)")
    if sps_count == 0:
        raise BitstreamFormatError(f"{what}: the HEVC stream has no SPS")
    if pictures != 1:
        raise BitstreamFormatError(f"{what}: the HEVC stream holds {pictures} pictures, an item holds one")


_AV1_OBU_TYPES = {1: "sequence header", 2: "temporal delimiter", 3: "frame header", 4: "tile group",
                  5: "metadata", 6: "frame", 15: "padding"}


def _leb128(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise BitstreamFormatError(f"{what}: an AV1 OBU size runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise BitstreamFormatError(f"{what}: an AV1 OBU size longer than 8 bytes")


def _av1_max_frame_size(payload: bytes, what: str) -> tuple[int, int, int]:
    """(seq_profile, max width, max height) from an AV1 sequence header OBU payload (AV1 spec 5.5)."""
    b = _Bits(payload, f"{what}: the AV1 sequence header")
    profile = b.u(3)
    b.u(1)  # still_picture
    reduced = b.u(1)
    if reduced:
        b.u(5)
    else:
        decoder_model_info = 0
        buffer_delay_length = 0
        if b.u(1):  # timing_info_present_flag
            b.u(32), b.u(32)
            if b.u(1):  # equal_picture_interval
                b.uvlc()
            decoder_model_info = b.u(1)
            if decoder_model_info:
                buffer_delay_length = b.u(5) + 1
                b.u(32), b.u(5), b.u(5)
        initial_display_delay = b.u(1)
        for _ in range(b.u(5) + 1):  # operating points
            b.u(12)
            if b.u(5) > 7:
                b.u(1)
            if decoder_model_info and b.u(1):
                b.u(buffer_delay_length), b.u(buffer_delay_length), b.u(1)
            if initial_display_delay and b.u(1):
                b.u(4)
    width_bits, height_bits = b.u(4) + 1, b.u(4) + 1
    return profile, b.u(width_bits) + 1, b.u(height_bits) + 1


def _check_av1(data: bytes, canvas: tuple[int, int], what: str) -> None:
    """Low-overhead OBUs of one picture whose sequence header codes at most, and here exactly, the canvas."""
    pos, headers, frames, count = 0, 0, 0, 0
    while pos < len(data):
        count += 1
        if count > _MAX_NALS:
            raise BitstreamFormatError(f"{what}: more than {_MAX_NALS} OBUs in one picture")
        header = data[pos]
        forbidden, obu_type, extension, has_size = header >> 7, (header >> 3) & 0xF, (header >> 2) & 1, (header >> 1) & 1
        pos += 1 + extension
        if forbidden or not has_size:
            raise BitstreamFormatError(f"{what}: not an AV1 low-overhead OBU stream")
        if obu_type not in _AV1_OBU_TYPES:
            raise BitstreamFormatError(f"{what}: AV1 OBU type {obu_type} (an intra picture has "
                                       f"{', '.join(_AV1_OBU_TYPES.values())})")
        size, pos = _leb128(data, pos, what)
        if size > len(data) - pos:
            raise BitstreamFormatError(f"{what}: an AV1 OBU of {size} bytes, {len(data) - pos} left")
        if obu_type == 1:
            headers += 1
            profile, width, height = _av1_max_frame_size(data[pos:pos + size], what)
            if profile != 0:
                raise BitstreamFormatError(f"{what}: AV1 profile {profile} (this codec codes main-profile 4:2:0)")
            if (width, height) != tuple(canvas):
                raise BitstreamFormatError(f"{what}: the AV1 sequence allows {width}×{height} pictures, the "
                                           f"container's canvas is {canvas[0]}×{canvas[1]}")
        elif obu_type in (3, 6):
            if not headers:
                raise BitstreamFormatError(f"{what}: an AV1 frame before any sequence header")
            frames += 1
        pos += size
    if not headers or not frames:
        raise BitstreamFormatError(f"{what}: the AV1 stream has no {'sequence header' if not headers else 'frame'}")
    if frames > 1:
        raise BitstreamFormatError(f"{what}: the AV1 stream holds {frames} frames, an item holds one")


# ---------------------------------------------------------------------------- decoding
_DECODERS = {CodecKind.HEVC: "hevc", CodecKind.AV1: "libdav1d"}
#: A stream larger than this many bytes per canvas pixel cannot be one 8-bit 4:2:0 intra picture from our
#: encoders (raw is 1.5; lossless-like coding stays below it) and is refused before decoding.
_MAX_BYTES_PER_PIXEL = 2


def _check_item(kind: CodecKind, item: CodedItem, what: str) -> None:
    if len(item.streams) != 1:
        raise BitstreamFormatError(f"{what}: {len(item.streams)} streams; a {kind.name.lower()} item holds one picture")
    if item.base_quality >= NUM_QUALITIES or (item.quality_map is not None and item.quality_map.levels()[-1] >= NUM_QUALITIES):
        raise BitstreamFormatError(f"{what}: quality level beyond the {NUM_QUALITIES} levels")
    width, height = item.canvas_size
    data = item.streams[0]
    if not 8 <= len(data) <= _MAX_BYTES_PER_PIXEL * width * height + 4096:
        raise BitstreamFormatError(f"{what}: a {len(data)}-byte picture for a {width}×{height} canvas")
    (_check_hevc if kind == CodecKind.HEVC else _check_av1)(bytes(data), (width, height), what)


def _decode_yuv(kind: CodecKind, item: CodedItem, what: str, checked: bool = False):
    """FFmpeg-decode an item's picture (after :func:`_check_item`) to a yuv420p frame of the canvas size."""
    av = _av()
    if not checked:
        _check_item(kind, item, what)
    width, height = item.canvas_size
    ctx = av.CodecContext.create(_DECODERS[kind], "r")
    ctx.options = {"max_pixels": str(width * height)}
    try:
        frames = list(ctx.decode(av.Packet(item.streams[0]))) + list(ctx.decode(None))
    except (av.error.FFmpegError, ValueError, RuntimeError) as exc:
        raise BitstreamFormatError(f"{what}: the {kind.name.lower()} decoder rejected the picture: {exc}") from exc
    if len(frames) != 1:
        raise BitstreamFormatError(f"{what}: the {kind.name.lower()} stream decoded to {len(frames)} pictures, not 1")
    frame = frames[0]
    if (frame.width, frame.height) != (width, height) or frame.format.name not in ("yuv420p", "yuvj420p"):
        raise BitstreamFormatError(f"{what}: decoded a {frame.width}×{frame.height} {frame.format.name} picture, "
                                   f"expected {width}×{height} yuv420p")
    return frame


def _yuv_to_rgb(frame) -> np.ndarray:
    from av.video.reformatter import ColorRange, Colorspace

    rgb = frame.reformat(format="rgb24", src_colorspace=Colorspace.ITU601, src_color_range=ColorRange.JPEG,
                         interpolation=_interpolation())
    return rgb.to_ndarray()


def _check_kind(container: Container) -> CodecKind:
    if not is_standard_kind(container.kind):
        raise CodecMismatchError(
            f"bitstream holds {container.kind.name.lower()} codec streams, not hevc/av1 pictures: decode it with "
            "the checkpoint that made it (codec.pipeline.decode; `cotam decode` picks the decoder from the header)"
        )
    return container.kind


def _iter_canvases(container: Container, kind: str | CodecKind | None) -> Iterator[np.ndarray]:
    """The RGB canvases (Hc, Wc, 3) uint8 of a container's items, all items checked before the first is decoded."""
    actual = _check_kind(container)
    if kind is not None:
        expected = _KINDS.get(kind, kind) if isinstance(kind, str) else kind
        if expected != actual:
            raise CodecMismatchError(f"bitstream holds {actual.name.lower()} pictures, expected "
                                     f"{CodecKind(expected).name.lower()}")
    for index, item in enumerate(container.items):
        _check_item(actual, item, f"item {index}")
    for index, item in enumerate(container.items):
        frame = _decode_yuv(actual, item, f"item {index}", checked=True)
        if zlib.crc32(frame.to_ndarray().tobytes()) != item.symbol_crc:
            raise SymbolMismatchError(f"item {index}: the decoded picture differs from the encoder's (YUV CRC mismatch)")
        yield _yuv_to_rgb(frame)


def decode_arrays(data: bytes, limits: ParseLimits | None = None, kind: str | CodecKind | None = None) -> list[np.ndarray]:
    """Decode a hevc / av1 container to uint8 (H, W, 3) pictures at their original sizes (cropped, or resized back).

    The same checks as :func:`iter_decode_container`, without the float tensors the vision tower takes.
    """
    from PIL import Image

    container = parse(data, limits)
    out = []
    for item, rgb in zip(container.items, _iter_canvases(container, kind)):
        w, h = item.orig_size
        if item.resize_mode == ResizeMode.PAD:
            out.append(np.ascontiguousarray(rgb[:h, :w]))
        else:
            out.append(np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC), dtype=np.uint8))
    return out


def iter_decode_container(container: Container, kind: str | CodecKind | None = None) -> Iterator["DecodedImage"]:
    """Decode the items of a parsed hevc / av1 container one at a time.

    Every item is checked (one stream, its size, its NAL/OBU structure, the coded size against the canvas)
    before any item is decoded; each decoded picture's YUV CRC is compared with the encoder's.

    Args:
        kind: when given, the kind the caller expects (``hevc`` / ``av1``); another kind is a mismatch.

    Raises:
        CodecMismatchError: the container is of another kind (the learned codec's, or not ``kind``).
        BitstreamFormatError: the item cannot be one picture of this kind, or FFmpeg rejected it.
        SymbolMismatchError: the decoded picture differs from the encoder's (corruption FFmpeg concealed).
    """
    import torch

    from .decoded import DecodedImage

    for index, rgb in enumerate(_iter_canvases(container, kind)):
        item = container.items[index]
        x_hat = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        h, w = item.canvas_size[1] // 16, item.canvas_size[0] // 16
        quality = (item.quality_map.expand(h, w) if item.quality_map is not None
                   else np.full((h, w), item.base_quality, dtype=np.uint8))
        yield DecodedImage(x_hat=x_hat, y_hat=None, quality=quality, item=item)


def decode_container(container: Container, kind: str | CodecKind | None = None) -> list["DecodedImage"]:
    """Decode every item of a parsed hevc / av1 container (see :func:`iter_decode_container`)."""
    return list(iter_decode_container(container, kind))


def iter_decode(data: bytes, limits: ParseLimits | None = None, kind: str | CodecKind | None = None) -> Iterator["DecodedImage"]:
    """Parse and validate a ``.cotam`` container of kind hevc / av1, then decode its items one at a time."""
    return iter_decode_container(parse(data, limits), kind)


def decode(data: bytes, limits: ParseLimits | None = None, kind: str | CodecKind | None = None) -> list["DecodedImage"]:
    """Parse, validate and decode a ``.cotam`` container of kind hevc / av1."""
    return decode_container(parse(data, limits), kind)
