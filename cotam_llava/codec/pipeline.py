"""Images in, ``.cotam`` bytes out, and back: the one edge path, and the learned codec's cloud half.

Edge (:func:`encode_item` for every base codec, learned or standard; :func:`pack` makes the container)::

    image ─guidance (optional): shallow-ViT attention → quality map (hierarchical over AnyRes tiles)─┐
          ─(pad to ×64, or resize to the canvas)─▶ x (1,3,Hc,Wc)
          ─CoTAMELIC.compress(x, quality | map)─▶ rANS streams + symbol CRC ─▶ CodedItem ─pack─▶ bytes
          (a standard codec: one intra picture per item, QP offsets per region; codec/standard.py)

Every tool that codes goes through :func:`encode_item`: ``cotam encode`` / ``cotam guidance``, the benchmark
interface (:mod:`.registry`), the edge encoder of a CoTAM model (:mod:`cotam_llava.vision.edge`) and the studies.

Cloud::

    bytes ─container.parse (CRCs, limits)─▶ CodedItem ─check codec id, streams, sizes, levels─▶
          bounded rANS decode of ŷ' ─check symbol CRC─▶ synthesis ─▶ DecodedImage(x̂ canvas, ŷ, quality map)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..errors import BitstreamError, BitstreamFormatError, CodecMismatchError, ConfigError, ImageInputError
from ..imageio import ImageLike, image_size, to_pil, to_tensor
from .container import (CodedItem, Container, ParseLimits, ResizeMode, canvas_for, encodable_canvas, entropy_arithmetic_of,
                        is_learned_kind, parse, serialize)
from .decoded import DecodedImage
from .loading import is_standard_codec
from .quality_map import QualityMap

if TYPE_CHECKING:  # the learned codec's modules (compressai) load only where it codes
    from .model import CoTAMELIC, CompressedLatent

__all__ = [
    "DecodedImage", "EncodedItem", "encode_item", "pack", "container_of", "compress_image", "encode", "decode",
    "decode_container", "iter_decode", "iter_decode_container", "canvas_for",
]


def _to_canvas(image: ImageLike, canvas: int | tuple[int, int] | None) -> tuple[Tensor, tuple[int, int], tuple[int, int], ResizeMode]:
    x = to_tensor(image)
    orig = (int(x.shape[-1]), int(x.shape[-2]))
    size, mode = canvas_for(orig, canvas)
    if mode == ResizeMode.PAD:
        x = F.pad(x, (0, size[0] - orig[0], 0, size[1] - orig[1]), mode="replicate")
    else:
        x = to_tensor(to_pil(x).resize(size, Image.BICUBIC))  # 8-bit bicubic, as MLLM image processors do
    return x, orig, size, mode


def compress_image(
    model: CoTAMELIC,
    image: ImageLike,
    quality: int,
    quality_map: QualityMap | None = None,
    canvas: int | tuple[int, int] | None = None,
    is_video_frame: bool = False,
    estimate: bool = False,
) -> tuple[CodedItem, CompressedLatent]:
    """Compress one image into a :class:`CodedItem` (and the codec's latent-level output).

    Args:
        model: a finalized codec.
        image: a path, PIL image, uint8 (H, W, 3) array or float (3, H, W) tensor.
        quality: base level in [0, num_qualities - 1].
        quality_map: optional per-region levels; expanded to the latent grid.
        canvas: None to code at native resolution (padded to ×64); an int or
            (width, height) to resize to that canvas first (e.g. 384).
        is_video_frame: mark the item as a video frame in the container.
        estimate: also compute the model's likelihoods (see ``CoTAMELIC.compress``).
    """
    quality = model.config.check_quality(quality)
    encodable_canvas(image_size(image), canvas)  # from the file's header: before any pixel is decoded
    x, orig, size, mode = _to_canvas(image, canvas)
    h, w = size[1] // 16, size[0] // 16
    if quality_map is not None:
        levels = quality_map.levels()
        if levels[-1] >= model.config.num_qualities:
            raise ConfigError(f"quality map uses level {levels[-1]}; this codec has {model.config.num_qualities}")
        q: int | Tensor = torch.from_numpy(quality_map.expand(h, w).astype(np.int64))
    else:
        q = quality
    device = next(model.parameters()).device
    latent = model.compress(x.to(device), q, estimate=estimate)
    item = CodedItem(
        orig_size=orig,
        canvas_size=size,
        resize_mode=mode,
        base_quality=quality,
        quality_map=quality_map,
        streams=latent.strings,
        symbol_crc=latent.symbol_crc,
        is_video_frame=is_video_frame,
    )
    return item, latent


@dataclass
class EncodedItem:
    """One picture through the edge path.

    Attributes:
        item: the coded item (what :func:`pack` puts into a container).
        latent: the learned codec's output (with ``estimate=True`` its likelihoods); None for standard codecs.
        importance: guidance's continuous pooled map, when guidance chose the quality map.
    """

    item: CodedItem
    latent: CompressedLatent | None = None
    importance: Tensor | None = None


def _num_qualities(codec: Any) -> int:
    return codec.num_qualities if is_standard_codec(codec) else codec.config.num_qualities


def encode_item(
    codec: Any,
    image: ImageLike,
    quality: int,
    *,
    quality_map: QualityMap | None = None,
    guidance: Any = None,
    tiles: tuple[int, int] | None = None,
    canvas: int | tuple[int, int] | None = None,
    is_video_frame: bool = False,
    estimate: bool = False,
) -> EncodedItem:
    """Code one picture with a learned codec (:class:`CoTAMELIC`, DCAE) or a standard one (hevc / av1).

    Args:
        codec: the base codec.
        image: a path, PIL image, uint8 (H, W, 3) array or float (3, H, W) tensor.
        quality: base level.
        quality_map: fixed per-region levels (exclusive with ``guidance``).
        guidance: a ``ShallowAttentionGuidance`` (the quality map comes from its shallow attention on ``image``) or a
            ``HostGuidance`` (from the host's final-token error at the base level's rate; None: a uniform file).
        tiles: (rows, cols) of an AnyRes tile grid for hierarchical guidance.
        canvas: None for native resolution (padded to ×64), an int or (width, height) to resize to.
        is_video_frame: mark the item as a video frame.
        estimate: also compute the learned codec's likelihoods (bits per position).
    """
    importance = None
    if guidance is not None:
        if quality_map is not None:
            raise ConfigError("guidance and a fixed quality map are exclusive")
        if guidance.config.allocation == "host":
            if tiles is not None:
                raise ConfigError("host guidance judges one view (no AnyRes tiles); use the paper's rule "
                                  "(allocation='paper') there")
            x = _to_canvas(image, canvas)[0]  # the standard codec's canvas too (the same resize and padding rules)
            if is_standard_codec(codec):
                if not codec.supports_map:
                    raise ConfigError(f"{codec.kind} has no per-region quality here, so guidance cannot steer it; use hevc")
                quality = codec.check_quality(quality)
            else:
                x, quality = x.to(next(codec.parameters()).device), codec.config.check_quality(quality)
            quality_map, importance = guidance.quality_map(codec, x, quality)
        else:
            from .guidance import guided_quality_map

            quality_map, importance = guided_quality_map(guidance, image, quality, tiles, _num_qualities(codec))
    if is_standard_codec(codec):
        return EncodedItem(codec.compress_image(image, quality, quality_map, canvas, is_video_frame), None, importance)
    item, latent = compress_image(codec, image, quality, quality_map, canvas, is_video_frame, estimate)
    return EncodedItem(item, latent, importance)


def container_of(codec: Any, items: Iterable[CodedItem]) -> Container:
    """The container of ``codec``'s items: its codec id and its kind (the base codec; for a learned one, the entropy
    arithmetic it codes with)."""
    return Container(codec_id=codec.codec_id, items=list(items), kind=codec.container_kind)


def pack(codec: Any, items: Iterable[CodedItem]) -> bytes:
    """The ``.cotam`` bytes of ``codec``'s items (see ``docs/bitstream.md``)."""
    return serialize(container_of(codec, items))


def encode(
    model: CoTAMELIC,
    images: ImageLike | Sequence[ImageLike],
    quality: int = 6,
    quality_maps: Sequence[QualityMap | None] | None = None,
    canvas: int | tuple[int, int] | None = None,
    video: bool = False,
) -> bytes:
    """Encode one image or a sequence of images (or video frames) into one ``.cotam`` container.

    Returns:
        The container's bytes (see ``docs/bitstream.md``).
    """
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        images = [images]
    if not images:
        raise ImageInputError("no images to encode")
    if quality_maps is not None and len(quality_maps) != len(images):
        raise ConfigError(f"{len(quality_maps)} quality maps for {len(images)} images")
    items = [encode_item(model, image, quality, quality_map=quality_maps[i] if quality_maps is not None else None,
                         canvas=canvas, is_video_frame=video).item for i, image in enumerate(images)]
    return pack(model, items)


def _check_item(model: CoTAMELIC, item: CodedItem, index: int) -> tuple[np.ndarray, int | Tensor]:
    """Everything about ``item`` that can be checked against ``model`` without decoding; its quality grid."""
    if len(item.streams) != model.stream_count():
        raise BitstreamFormatError(f"item {index}: {len(item.streams)} streams, this codec writes {model.stream_count()}")
    Q = model.config.num_qualities
    if item.base_quality >= Q or (item.quality_map is not None and item.quality_map.levels()[-1] >= Q):
        raise BitstreamFormatError(f"item {index}: quality level beyond this codec's {Q} levels")
    h, w = item.canvas_size[1] // 16, item.canvas_size[0] // 16
    for k, (stream, symbols) in enumerate(zip(item.streams, model.stream_symbols((h, w)))):
        # A rANS stream is whole 32-bit words: 2 of initial state, then at most one per symbol read
        # and one per 4-bit escape chunk (at most 9 per symbol): anything else cannot be a real stream.
        if len(stream) % 4 or not 8 <= len(stream) <= 8 + 40 * symbols:
            raise BitstreamFormatError(
                f"item {index}: stream {k} has {len(stream)} bytes; a stream of {symbols} symbols has a multiple "
                f"of 4 between 8 and {8 + 40 * symbols}"
            )
    if item.quality_map is not None:
        qgrid = item.quality_map.expand(h, w)
        return qgrid, torch.from_numpy(qgrid.astype(np.int64))
    return np.full((h, w), item.base_quality, dtype=np.uint8), item.base_quality


def iter_decode_container(model: CoTAMELIC, container: Container) -> Iterator[DecodedImage]:
    """Decode the items of a parsed container one at a time (only the current one is held).

    Every item is checked against ``model`` (stream count, levels, stream sizes) before any item is
    decoded, and each item's symbol checksum is compared before its synthesis runs. A standard ``model``
    (hevc / av1) decodes through :func:`cotam_llava.codec.standard.iter_decode_container` (``y_hat`` None).

    Raises:
        CodecMismatchError: the container was made by another codec (or another kind of codec).
        BitstreamFormatError: stream count, stream sizes or quality levels do not fit this codec.
        EntropyDecodingError: a rANS stream cannot have been written with this codec's tables.
        SymbolMismatchError: the decoded symbols differ from the encoder's (cross-device drift).
    """
    if is_standard_codec(model):
        from .standard import iter_decode_container as standard_items

        yield from standard_items(container, model.kind)
        return
    if not is_learned_kind(container.kind):
        raise CodecMismatchError(
            f"bitstream holds {container.kind.name.lower()} pictures, not the learned codec's latents: decode it "
            "with codec.standard.decode (`cotam decode` picks the decoder from the header)"
        )
    if container.codec_id != model.codec_id:
        raise CodecMismatchError(
            f"bitstream was made by codec {container.codec_id.hex()}, this checkpoint is "
            f"{model.codec_id.hex()}: decode it with the checkpoint that encoded it"
        )
    checked = [_check_item(model, item, index) for index, item in enumerate(container.items)]
    arithmetic = entropy_arithmetic_of(container.kind)
    if arithmetic == "fixed":
        from .exact import check_fixed_point

        try:
            check_fixed_point(model)
        except ConfigError as exc:
            raise BitstreamFormatError(f"the container says fixed-point entropy parameters, which this codec cannot "
                                       f"compute: {exc}") from None
    for index, (item, (qgrid, q)) in enumerate(zip(container.items, checked)):
        h, w = qgrid.shape
        try:
            dec = model.decompress(item.streams, (h, w), q, expected_symbol_crc=item.symbol_crc, arithmetic=arithmetic)
        except BitstreamError as exc:
            raise type(exc)(f"item {index}: {exc}") from exc
        yield DecodedImage(x_hat=dec.x_hat, y_hat=dec.y_hat, quality=qgrid, item=item)


def decode_container(model: CoTAMELIC, container: Container) -> list[DecodedImage]:
    """Decode every item of a parsed container with ``model`` (see :func:`iter_decode_container`)."""
    return list(iter_decode_container(model, container))


def iter_decode(model: CoTAMELIC, data: bytes, limits: ParseLimits | None = None) -> Iterator[DecodedImage]:
    """Parse and validate a ``.cotam`` container, then decode its items one at a time (for long videos)."""
    return iter_decode_container(model, parse(data, limits))


def decode(model: CoTAMELIC, data: bytes, limits: ParseLimits | None = None) -> list[DecodedImage]:
    """Parse, validate and decode a ``.cotam`` container (see :func:`iter_decode_container`)."""
    return decode_container(model, parse(data, limits))
