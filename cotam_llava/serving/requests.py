"""Chat requests that carry ``.cotam`` bitstreams: content parts, data URIs, validation, error mapping.

Pure Python (no torch, no aiohttp, no vLLM): what the server does to a request body before anything is decoded.

A bitstream travels as an ordinary OpenAI ``image_url`` content part whose URL is a data URI of the media type
:data:`COTAM_MEDIA_TYPE`, so any OpenAI client can send one::

    {"type": "image_url", "image_url": {"url": "data:application/x-cotam;base64,iVDUTQI..."}}

:func:`find_cotam_parts` finds those parts (and refuses malformed ones before decoding a byte of base64 beyond the
size limit); the server replaces each with the ``image_embeds`` part vLLM reads (:func:`replace_parts`). Every
refusal is a :class:`RequestError` or a :class:`~cotam_llava.errors.BitstreamError`; :func:`status_for` maps them
to HTTP statuses and :func:`error_body` to OpenAI-style error bodies.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any

from ..errors import (
    BitstreamError,
    BitstreamFormatError,
    BitstreamLimitError,
    CodecMismatchError,
    ConfigError,
    CoTAMError,
)

__all__ = [
    "COTAM_MEDIA_TYPE",
    "DEFAULT_MAX_BITSTREAM_BYTES",
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MAX_VIDEO_FRAMES",
    "RequestError",
    "CotamPart",
    "cotam_data_uri",
    "cotam_content_part",
    "parse_data_uri",
    "find_cotam_parts",
    "replace_parts",
    "validate_bitstream",
    "status_for",
    "error_body",
]

#: The media type of a ``.cotam`` container in a data URI (``data:application/x-cotam;base64,...``).
COTAM_MEDIA_TYPE = "application/x-cotam"
#: Largest container one content part may carry (bytes after base64 decoding). A 384² CoTAM image is ~1–10 kB.
DEFAULT_MAX_BITSTREAM_BYTES = 4 * 1024 * 1024
#: Most bitstreams in one request.
DEFAULT_MAX_IMAGES = 8
#: Most frames of one ``.cotam`` video part (video MLLMs sample 8–64).
DEFAULT_MAX_VIDEO_FRAMES = 32

#: content parts only the server itself may hand to the engine (vLLM runs with --enable-mm-embeds)
_RESERVED_PARTS = ("image_embeds", "audio_embeds", "video_embeds")

_DATA_URI = re.compile(r"^data:(?P<type>[A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+)(?P<params>(?:;[A-Za-z0-9.+\-]+=[^;,]*)*)"
                       r"(?P<b64>;base64)?,", re.ASCII)


class RequestError(CoTAMError, ValueError):
    """A chat request the server refuses before decoding: bad JSON shape, a bad data URI, too many or too large
    bitstreams. ``status`` is the HTTP status; ``param`` where in the request it is (``messages[0].content[1]``)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass(frozen=True)
class CotamPart:
    """One ``.cotam`` content part of a request.

    Attributes:
        message: index into ``messages``.
        part: index into that message's ``content`` list.
        data: the container bytes (base64-decoded, not yet parsed).
        video: it came in a ``video_url`` part (a container of video frames).
    """

    message: int
    part: int
    data: bytes
    video: bool = False

    @property
    def param(self) -> str:
        return f"messages[{self.message}].content[{self.part}]"


def cotam_data_uri(data: bytes) -> str:
    """``data:application/x-cotam;base64,...`` for container bytes."""
    return f"data:{COTAM_MEDIA_TYPE};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def cotam_content_part(data: bytes, video: bool = False) -> dict[str, Any]:
    """The OpenAI chat content part carrying a ``.cotam`` container: an ``image_url`` with a CoTAM data URI, or a
    ``video_url`` for a container of video frames (``video``; hosts with a video path)."""
    kind = "video_url" if video else "image_url"
    return {"type": kind, kind: {"url": cotam_data_uri(data)}}


def parse_data_uri(url: str, max_bytes: int = DEFAULT_MAX_BITSTREAM_BYTES, param: str | None = None) -> tuple[str, bytes]:
    """(media type, payload bytes) of a base64 data URI.

    The encoded length is checked against ``max_bytes`` before anything is decoded.

    Raises:
        RequestError: not a data URI, not base64, invalid base64 (400), or larger than ``max_bytes`` (413).
    """
    if not isinstance(url, str):
        raise RequestError(f"image_url.url must be a string, got {type(url).__name__}", param=param)
    m = _DATA_URI.match(url)
    if m is None:
        raise RequestError("not a data URI (expected data:<type>/<subtype>[;params];base64,<data>)", param=param)
    if not m.group("b64"):
        raise RequestError(f"the {m.group('type')} data URI must be base64-encoded (;base64,)", param=param)
    encoded = url[m.end():]
    # base64 carries 3 bytes per 4 characters: refuse before decoding what could not fit
    if (len(encoded) // 4) * 3 > max_bytes + 3:
        raise RequestError(f"bitstream of about {(len(encoded) // 4) * 3} bytes exceeds the server's limit of "
                           f"{max_bytes} bytes", status=413, param=param)
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"invalid base64 in the data URI: {exc}", param=param) from None
    if len(payload) > max_bytes:
        raise RequestError(f"bitstream of {len(payload)} bytes exceeds the server's limit of {max_bytes} bytes",
                           status=413, param=param)
    return m.group("type").lower(), payload


def _cotam_url(part: dict[str, Any]) -> str | None:
    """The URL of an image_url / video_url part when it is a CoTAM data URI (case-insensitive media type)."""
    for key in ("image_url", "video_url"):
        if part.get("type") == key:
            spec = part.get(key)
            url = spec.get("url") if isinstance(spec, dict) else spec
            if isinstance(url, str) and url[:5].lower() == "data:" and \
                    url[5:5 + len(COTAM_MEDIA_TYPE)].lower() == COTAM_MEDIA_TYPE:
                return url
    return None


def find_cotam_parts(
    body: Any,
    max_bytes: int = DEFAULT_MAX_BITSTREAM_BYTES,
    max_images: int = DEFAULT_MAX_IMAGES,
    videos: bool = False,
) -> list[CotamPart]:
    """The ``.cotam`` content parts of a chat-completions request body, in order.

    Only the request's shape is checked here (a ``messages`` list of objects, each ``content`` a string or a list of
    objects); everything else is vLLM's to validate. A CoTAM data URI in a ``video_url`` part is a video; it is
    refused unless ``videos`` (the served host has a video path). A client's own ``image_embeds`` part is refused:
    the engine accepts embeddings (``--enable-mm-embeds``) only because the server makes them.

    Raises:
        RequestError: a malformed body or part (400), too many bitstreams (413), one too large (413).
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestError("'messages' must be a list", param="messages")
    found: list[CotamPart] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError("each message must be an object", param=f"messages[{i}]")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise RequestError("'content' must be a string or a list of content parts", param=f"messages[{i}].content")
        for j, part in enumerate(content):
            param = f"messages[{i}].content[{j}]"
            if not isinstance(part, dict):
                raise RequestError("each content part must be an object", param=param)
            if part.get("type") in _RESERVED_PARTS:
                raise RequestError(f"{part.get('type')} parts are not accepted from clients (the server makes them "
                                   "from .cotam bitstreams); send the bitstream as an image_url data URI", param=param)
            url = _cotam_url(part)
            if url is None:
                continue
            video = part.get("type") == "video_url"
            if video and not videos:
                raise RequestError("a .cotam video is not supported by this server (its host takes images); send "
                                   "each frame as an image part", param=param)
            if len(found) >= max_images:
                raise RequestError(f"more than {max_images} .cotam bitstreams in one request", status=413, param=param)
            media, data = parse_data_uri(url, max_bytes, param)
            if media != COTAM_MEDIA_TYPE:
                raise RequestError(f"unexpected media type {media!r}", param=param)
            found.append(CotamPart(i, j, data, video))
    return found


def replace_parts(body: dict[str, Any], replacements: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``body`` with the content parts at ``(message, part)`` replaced (the original is not changed)."""
    out = dict(body)
    messages = [dict(m) if isinstance(m, dict) else m for m in body["messages"]]
    for (i, j), new in replacements.items():
        content = list(messages[i]["content"])
        content[j] = copy.deepcopy(new)
        messages[i]["content"] = content
    out["messages"] = messages
    return out


def validate_bitstream(data: bytes, limits: Any, codec_id: bytes | None = None, max_items: int = 1,
                       video: bool = False) -> Any:
    """Parse a container (bounds checks and CRCs, no entropy decoding) and check it is one image (or, with
    ``video``, one video's frames) of our codec.

    Args:
        data: container bytes.
        limits: the server's :class:`~cotam_llava.codec.container.ParseLimits`.
        codec_id: the served codec's id; a container of another codec is refused.
        max_items: most coded items (1: one image per part; a video's most frames).
        video: the part is a video: every item must be a video frame.

    Returns:
        The parsed :class:`~cotam_llava.codec.container.Container`.

    Raises:
        BitstreamError: malformed, corrupted, over the limits, frames in an image part or an image in a video
            part, or another codec's (CodecMismatchError).
    """
    from ..codec.container import is_learned_kind, parse

    container = parse(data, limits)
    if not is_learned_kind(container.kind):
        raise CodecMismatchError(f"the bitstream was made by the standard {container.kind.name.lower()} codec; this "
                                 "server decodes the learned CoTAM codec only")
    if codec_id is not None and container.codec_id != codec_id:
        raise CodecMismatchError(f"bitstream was made by codec {container.codec_id.hex()}, this server decodes codec "
                                 f"{codec_id.hex()}: encode with the served model's codec")
    if not container.items:
        raise BitstreamFormatError("the container holds no coded image")
    if video and not all(item.is_video_frame for item in container.items):
        raise BitstreamFormatError("a video part's container must hold video frames (encode the clip as a video)")
    if not video and any(item.is_video_frame for item in container.items):
        raise BitstreamFormatError("the container holds video frames: send it as a video_url part")
    what = "one video part takes" if video else "one image part takes"
    if len(container.items) > max_items:
        raise BitstreamLimitError(f"the container holds {len(container.items)} items; {what} {max_items}")
    return container


#: exception type → HTTP status; the first match in method resolution order wins.
_STATUS = (
    (BitstreamLimitError, 413),
    (CodecMismatchError, 422),
    (BitstreamError, 400),
    (ConfigError, 400),
    (CoTAMError, 400),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error: its own ``status`` (RequestError), 413 for limits, 422 for another codec's
    bitstream, 400 for every other CoTAM error, 500 otherwise."""
    status = getattr(exc, "status", None)
    if isinstance(exc, RequestError) and isinstance(status, int):
        return status
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def error_body(exc: BaseException, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``.

    The message is the error's own for the package's errors and errors that carry an HTTP ``status`` (ours are
    written for users); an unexpected error (a bug) is not echoed.
    """
    status = status_for(exc)
    known = isinstance(exc, CoTAMError) or isinstance(getattr(exc, "status", None), int)
    message = str(exc) if known else f"internal error while decoding ({type(exc).__name__}); see the server log"
    return {"error": {"message": message, "type": type(exc).__name__ if known else "InternalServerError",
                      "param": param if param is not None else getattr(exc, "param", None), "code": status}}
