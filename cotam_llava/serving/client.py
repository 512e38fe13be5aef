"""The edge side of ``cotam serve``: encode with the served model's own edge settings, post, read the answer.

::

    load_edge(model folder) ─▶ CoTAMProcessor (tokenizer-free use: its EdgeEncoder — codec, canvas, crop, quality,
                               guidance — exactly what `cotam chat` and the transformers model use)
    image ─edge.encode_images─▶ .cotam bytes ─cotam_content_part─▶ {"type": "image_url",
                                    "image_url": {"url": "data:application/x-cotam;base64,..."}}
          ─POST {server}/v1/chat/completions (stdlib urllib; any OpenAI client works the same)─▶ answer + "cotam"

Only the standard library is needed to talk to the server; encoding needs the package (torch, the codec).
The OpenAI client does the same in three lines (docs/serving.md)::

    from openai import OpenAI
    from cotam_llava.serving import cotam_content_part
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(model="NAME",
        messages=[{"role": "user", "content": [cotam_content_part(open("photo.cotam", "rb").read()),
                                               {"type": "text", "text": "What is this?"}]}])
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import CoTAMError, ImageInputError
from .requests import cotam_content_part

__all__ = ["ServerError", "ServerChatResult", "load_edge", "encode_image", "chat_request", "post_chat",
           "served_models", "chat_image"]


class ServerError(CoTAMError):
    """The server refused or failed a request: ``status`` (HTTP), ``type`` (its error type), the server's message."""

    def __init__(self, status: int, message: str, type: str | None = None, param: str | None = None) -> None:
        super().__init__(f"server answered {status}" + (f" {type}" if type else "") + f": {message}")
        self.status = status
        self.type = type
        self.param = param
        self.server_message = message


@dataclass
class ServerChatResult:
    """One answer from ``cotam serve``.

    Attributes:
        answer: the generated text.
        bits: bits of the container(s) sent (8 × bytes, headers included).
        bpp: bits / pixels of the input image (the project's rate definition); None for a ``.cotam`` input.
        bpp_coded: bits / pixels of the coded picture(s) as the container records them (what the server reports;
            a video counts every frame).
        quality: the container's base quality.
        decode_ms: the server's decoding time (entropy decoding + synthesis).
        token_ids: the generated token ids (when the server returns them).
        response: the whole JSON response.
    """

    answer: str
    bits: int
    bpp: float | None
    bpp_coded: float
    quality: int
    decode_ms: float
    token_ids: list[int] | None = None
    response: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_edge(model: str | os.PathLike, cotam: str | os.PathLike | None = None) -> Any:
    """The edge encoder settings of a served model, without its weights: a :class:`~cotam_llava.models.CoTAMProcessor`
    with the model's codec.

    Args:
        model: a CoTAM model folder (``cotam_processor.json`` + ``codec/``), or a stock LLaVA folder with ``cotam``.
        cotam: codec folder (required with a stock host; replaces a CoTAM folder's ``codec/``).
    """
    from ..codec.model import CoTAMELIC
    from ..errors import CheckpointError
    from ..models import CoTAMProcessor, default_tower_config

    folder = Path(model).expanduser()
    if (folder / "cotam_processor.json").is_file():
        return CoTAMProcessor.from_pretrained(str(folder), codec=str(cotam) if cotam is not None else "auto")
    if cotam is None:
        raise CheckpointError(f"{folder} is not a CoTAM model folder (no cotam_processor.json): pass the codec folder")
    from transformers import AutoConfig, AutoProcessor

    from .._transformers import quiet_transformers

    codec = CoTAMELIC.from_pretrained(cotam)
    with quiet_transformers():
        host = AutoProcessor.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(folder))
    return CoTAMProcessor(host, default_tower_config(config, host.image_processor, codec), codec)


def encode_image(edge: Any, image: Any, quality: int | None = None) -> bytes:
    """One image (path, PIL image, uint8 array) → ``.cotam`` bytes with the edge's settings."""
    [data] = edge.encode_images([image], quality)
    return data


def chat_request(bitstreams: bytes | Sequence[bytes], question: str, model: str, max_tokens: int = 64,
                 stream: bool = False, video: bool = False, **extra: Any) -> dict[str, Any]:
    """A greedy chat-completions body: the bitstreams as image parts (``video``: as video parts), then the question.

    ``return_token_ids`` (a vLLM extension) asks for the generated ids; ``extra`` adds or overrides fields.
    """
    streams = [bitstreams] if isinstance(bitstreams, (bytes, bytearray)) else list(bitstreams)
    content = [cotam_content_part(s, video) for s in streams] + [{"type": "text", "text": question}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0.0, "stream": stream, "return_token_ids": True}
    body.update(extra)
    return body


def _request(url: str, data: bytes | None = None, api_key: str | None = None, timeout: float = 600.0) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers or {}), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(0, f"cannot reach {url}: {exc}") from exc


def _raise_for(status: int, body: bytes) -> None:
    try:
        err = json.loads(body).get("error") or {}
    except ValueError:
        err = {}
    if isinstance(err, str):
        err = {"message": err}
    raise ServerError(status, str(err.get("message") or body[:500].decode("utf-8", "replace")), err.get("type"),
                      err.get("param"))


def served_models(server: str, api_key: str | None = None, timeout: float = 30.0) -> list[str]:
    """The model names a server serves (``GET /v1/models``)."""
    status, _, body = _request(f"{server.rstrip('/')}/v1/models", api_key=api_key, timeout=timeout)
    if status != 200:
        _raise_for(status, body)
    return [m["id"] for m in json.loads(body).get("data", [])]


def post_chat(server: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 600.0) -> tuple[dict[str, Any], dict[str, str]]:
    """POST a (non-streaming) chat-completions body; (JSON response, headers).

    Raises:
        ServerError: any status but 200 (the server's own error message), or the server cannot be reached.
    """
    status, headers, data = _request(f"{server.rstrip('/')}/v1/chat/completions", json.dumps(body).encode(),
                                     api_key, timeout)
    if status != 200:
        _raise_for(status, data)
    return json.loads(data), headers


def chat_image(server: str, image: Any, question: str, edge: Any = None, quality: int | None = None,
               model: str | None = None, max_tokens: int = 64, api_key: str | None = None,
               timeout: float = 600.0, num_frames: int = 16) -> ServerChatResult:
    """Ask a ``cotam serve`` server about one image or video: encode it on the edge (or read a ``.cotam`` file), post,
    answer. A video (a video file, or a ``.cotam`` container of frames) goes as a ``video_url`` part (LLaVA-OneVision
    hosts).

    Args:
        server: ``http://host:port``.
        image: an image (path, PIL image, array) or a video file — needs ``edge`` — or the path of a ``.cotam``
            file, or its bytes.
        question: the user's text.
        edge: from :func:`load_edge` (the served model's edge settings).
        quality: edge quality level (default: the model's).
        model: the served model name (default: the server's first).
        max_tokens: generation budget (greedy).
        num_frames: frames sampled from a video file.

    Raises:
        ServerError: the server refused the request (its message) or cannot be reached.
        ImageInputError: the input cannot be read.
    """
    from ..codec.container import MAGIC, parse

    pixels = None
    if isinstance(image, (bytes, bytearray)) and bytes(image[:4]) == MAGIC:
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)) and str(image).lower().endswith(".cotam"):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise ImageInputError(f"cannot read {image}: {exc}") from exc
    else:
        if edge is None:
            raise ImageInputError("an image needs the edge encoder (load_edge(model folder)) to be coded")
        from ..codec.video import is_video

        if isinstance(image, (str, os.PathLike)) and is_video(image):
            [data] = edge.encode_videos([image], num_frames=num_frames, quality=quality)
        else:
            from ..imageio import image_size

            width, height = image_size(image)
            pixels = width * height
            data = encode_image(edge, image, quality)
    if model is None:
        names = served_models(server, api_key)
        if not names:
            raise ServerError(0, f"{server} serves no model")
        model = names[0]
    container = parse(data)
    video = bool(container.items) and all(item.is_video_frame for item in container.items)
    out, _ = post_chat(server, chat_request(data, question, model, max_tokens, video=video), api_key, timeout)
    choice = out["choices"][0]
    info = out.get("cotam") or {}
    images = info.get("images") or [{}]
    bits = 8 * len(data)
    coded_pixels = sum(int(i.orig_size[0]) * int(i.orig_size[1]) for i in container.items)  # a video: every frame
    return ServerChatResult(
        answer=(choice.get("message", {}).get("content") or "").strip(),
        bits=bits,
        bpp=bits / pixels if pixels else None,
        bpp_coded=float(images[0].get("bpp", bits / coded_pixels)),
        quality=int(images[0].get("quality", container.items[0].base_quality)),
        decode_ms=float(info.get("decode_ms", 0.0)),
        token_ids=choice.get("token_ids"),
        response=out,
    )
