"""One question about one image, video or ``.cotam`` file to a CoTAM-enabled MLLM (``cotam chat``).

The model and processor come from :func:`cotam_llava.models.loading.load_cotam` (a CoTAM folder, or a stock
host plus a codec)::

    image ─processor edge side (codec at the tower's canvas, quality q)─▶ .cotam bytes ─┐
    video ─uniform frame sampling, each frame coded (LLaVA-OneVision)──▶ .cotam bytes ─┤
    .cotam file ─read as is (image or video frames, from its header)────▶ .cotam bytes ─┤
    question ─host chat template with an image / video entry─▶ prompt ───────────────────┤
        → processor(...) → model.generate(greedy) ─TextStreamer─▶ the answer on stdout

The bits reported are the real container's (``len(bytes) * 8``, headers included), whatever the input was; bpp
divides them by the input image's pixels (for a ``.cotam`` input: the coded picture's original size, as
``cotam info`` does; the two differ when the edge keeps only the centre square a CLIP-style host would crop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ImageInputError

__all__ = ["ChatResult", "chat", "input_kind"]

@dataclass
class ChatResult:
    """What one :func:`chat` call produced.

    Attributes:
        answer: the generated text (special tokens removed, stripped).
        bits: size of the ``.cotam`` container the model read, in bits (headers included).
        bpp: ``bits`` / pixels of the input image, the project's one rate definition (docs/bitstream.md, "Rate");
            None for a ``.cotam`` input (the photo it came from is not known there) and for a video.
        bpp_coded: ``bits`` / pixels of the picture(s) the container records (each item's original size: for an
            MLLM, the centre square or tiles the edge coded); the only rate a ``.cotam`` file alone can give.
        quality: the container's base quality level (of its first item).
        kind: "image" or "video".
        items: coded items in the container (1 for an image, the frame count for a video).
    """

    answer: str
    bits: int
    bpp: float | None
    quality: int
    bpp_coded: float | None = None
    kind: str = "image"
    items: int = 1


def input_kind(path: str | os.PathLike) -> str:
    """"cotam", "video" or "image", from the file name (videos by their extension)."""
    from ..codec.video import is_video

    p = Path(path)
    if p.suffix.lower() == ".cotam":
        return "cotam"
    return "video" if is_video(p) else "image"


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageInputError(f"cannot read image {path}: {exc}") from exc


def _supports_video(model: Any) -> bool:
    from .modeling_cotam import CoTAMLlavaOnevisionForConditionalGeneration

    return isinstance(model, CoTAMLlavaOnevisionForConditionalGeneration)


def chat(
    model: Any,
    processor: Any,
    input_path: str | os.PathLike,
    question: str,
    quality: int | None = None,
    frames: int = 16,
    max_new_tokens: int = 64,
    stream: bool = True,
) -> ChatResult:
    """Ask ``question`` about an image, a video or a ``.cotam`` file; greedy decoding.

    Args:
        model, processor: from :func:`load_cotam` (or any CoTAM model and :class:`CoTAMProcessor`).
        input_path: an image file, a video file (LLaVA-OneVision only), or a ``.cotam`` container holding
            one image or the frames of one video.
        question: the user's text.
        quality: edge quality level for images and videos (default: the model's); ignored for ``.cotam``.
        frames: frames sampled uniformly from a video file.
        max_new_tokens: generation budget.
        stream: print the answer to stdout token by token as it is generated.

    Returns:
        A :class:`ChatResult` (answer, bits, bpp, quality).

    Raises:
        ImageInputError: the input is missing or unreadable.
        ConfigError: a video on a host without video support, or invalid settings.
        BitstreamError: a malformed ``.cotam`` file, or one made by another codec (CodecMismatchError).
    """
    from transformers import TextStreamer

    from ..codec.container import parse
    from ..codec.transport import unpack_bitstreams

    path = Path(input_path)
    if not path.is_file():
        raise ImageInputError(f"input not found: {path}" if not path.exists() else f"input is not a file: {path}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    kind = input_kind(path)
    data: bytes | None = None
    if kind == "cotam":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageInputError(f"cannot read {path}: {exc}") from exc
        container = parse(data, processor.limits)
        if not container.items:
            raise ImageInputError(f"{path} holds no coded items")
        media = "video" if container.items[0].is_video_frame else "image"
    else:
        media = kind
    if media == "video" and not _supports_video(model):
        raise ConfigError(f"{type(model).__name__} takes no video on the CoTAM path; use a LLaVA-OneVision host")
    if media == "video" and frames < 1:
        raise ConfigError(f"frames must be at least 1, got {frames}")

    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": media}, {"type": "text", "text": question}]}], add_generation_prompt=True
    )
    if kind == "cotam":
        key = "video_bitstreams" if media == "video" else "bitstreams"
        inputs = processor(text=prompt, **{key: [data]})
    elif media == "video":
        inputs = processor(text=prompt, videos=[str(path)], num_frames=frames, quality=quality)
    else:
        inputs = processor(text=prompt, images=[str(path)], quality=quality)

    [stream_bytes] = unpack_bitstreams(inputs["pixel_values_videos" if media == "video" else "pixel_values"])
    coded = parse(stream_bytes, processor.limits)
    bits = 8 * len(stream_bytes)
    first = coded.items[0]
    bpp = None
    if media == "image" and kind == "image":
        width, height = _image_size(path)
        bpp = bits / (width * height)
    bpp_coded = bits / sum(item.orig_size[0] * item.orig_size[1] for item in coded.items)

    tokenizer = processor.tokenizer
    extra: dict[str, Any] = {}
    if getattr(model.generation_config, "pad_token_id", None) is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is not None:
            extra["pad_token_id"] = pad
    if stream:
        extra["streamer"] = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = inputs.to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    answer = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    return ChatResult(answer=answer, bits=bits, bpp=bpp, quality=first.base_quality, kind=media, items=len(coded.items),
                      bpp_coded=bpp_coded)
