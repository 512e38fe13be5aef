"""``cotam serve``'s front: an OpenAI-compatible HTTP server that decodes ``.cotam`` parts and proxies to vLLM.

::

    client ─POST /v1/chat/completions {messages: [..., {"type": "image_url",
                                        "image_url": {"url": "data:application/x-cotam;base64,..."}}, ...]}─▶
      find_cotam_parts (shape, data URI, size limits) ─validate_bitstream (parse, CRCs, codec id, limits)─▶
      EmbedBatcher (worker thread: decode each, one batched tower + adapter + projector pass) ─▶ (n, hidden)
      part ─replaced by─▶ {"type": "image_embeds", "image_embeds": base64(torch.save((n, hidden)))}
      ─POST 127.0.0.1:<backend>/v1/chat/completions─▶ vLLM (the host's language model, continuous batching)
      ◀─ its answer (JSON, or the SSE stream as it comes) + "cotam": {bits, bpp, decode_ms...} / X-CoTAM-* headers

Ordinary image parts and text-only chats go to vLLM as they are, and so do ``/v1/models``, ``/v1/completions``,
``/version``, ``/tokenize``, ``/detokenize`` and ``/metrics``; no other engine endpoint is reachable, and a client's
own ``image_embeds`` parts are refused (the engine takes embeddings only because this server makes them).
A refused request gets a 4xx with an OpenAI-style error body (:func:`~.requests.error_body`); nothing a request
carries can stop the server or the engine (the engine is another process; decoding runs in a worker thread whose
failures are the request's). Every request is answered: when the tower queue is full, 503.

Response fields: ``cotam.images[i]`` per bitstream — ``bits`` (8 × container bytes, headers included), ``pixels``
(the coded picture's original size as the container records it), ``bpp`` (= bits / pixels), ``quality``,
``tokens``, ``decode_ms`` (entropy decoding + synthesis), ``tower_ms`` (its batched encoder pass), ``queue_ms``,
``batch``; ``cotam.bits`` / ``cotam.bpp`` for the request (all bitstreams). Streams carry the same as headers
(``X-CoTAM-Bits``, ``X-CoTAM-BPP``, ``X-CoTAM-Decode-Ms``) since the body starts before the answer ends.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..codec.container import ParseLimits
from .requests import (
    DEFAULT_MAX_BITSTREAM_BYTES,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_VIDEO_FRAMES,
    RequestError,
    error_body,
    find_cotam_parts,
    replace_parts,
    status_for,
    validate_bitstream,
)

__all__ = ["ServerSettings", "make_app", "embeds_part"]

log = logging.getLogger("cotam_llava.serving")

#: vLLM endpoints passed through as they are
_PROXIED = (("GET", "/v1/models"), ("GET", "/v1/models/{name:.*}"), ("POST", "/v1/completions"), ("GET", "/version"),
            ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/metrics"))
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
                "upgrade", "proxy-connection", "te", "trailer"}


@dataclass
class ServerSettings:
    """What one front serves.

    Args:
        backend_url: the vLLM OpenAI server (``http://127.0.0.1:PORT``).
        max_bitstream_bytes: largest container per part.
        max_images: most bitstreams per request.
        limits: parse limits for each container (``max_items=1``: one image per part).
        max_video_frames: most frames of a video part (hosts with a video path); its other limits are ``limits``'.
        request_timeout: seconds a proxied request may take.
        backend_pid: the vLLM child's PID when this front started it (reported by ``/health``).
    """

    backend_url: str
    max_bitstream_bytes: int = DEFAULT_MAX_BITSTREAM_BYTES
    max_images: int = DEFAULT_MAX_IMAGES
    limits: ParseLimits = ParseLimits(max_items=1)
    max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES
    request_timeout: float = 600.0
    backend_pid: int | None = None

    @property
    def video_limits(self) -> ParseLimits:
        return dataclasses.replace(self.limits, max_items=self.max_video_frames)

    @property
    def max_body_bytes(self) -> int:
        # base64 (4/3) of every allowed bitstream, plus room for the text of the conversation
        return self.max_images * (self.max_bitstream_bytes * 4 // 3 + 64) + 4 * 1024 * 1024


def embeds_part(embeds: Any) -> dict[str, Any]:
    """vLLM's ``image_embeds`` content part for one image's (n_tokens, hidden) embeddings (one part per image: vLLM
    deprecates batched (n_images, n_tokens, hidden) parts in chat requests)."""
    import torch

    buf = io.BytesIO()
    torch.save(embeds.reshape(embeds.shape[-2:]).contiguous(), buf)
    return {"type": "image_embeds", "image_embeds": base64.b64encode(buf.getvalue()).decode("ascii")}


def _json_error(exc: BaseException, param: str | None = None, status: int | None = None):
    from aiohttp import web

    body = error_body(exc, param)
    code = status if status is not None else status_for(exc)
    body["error"]["code"] = code
    return web.json_response(body, status=code)


def make_app(embedder: Any, settings: ServerSettings, batcher: Any = None):
    """The aiohttp application (routes: ``POST /v1/chat/completions``, ``GET /health``, the rest proxied).

    Args:
        embedder: a :class:`~.vision.CoTAMEmbedder` (its codec id is the one accepted).
        settings: :class:`ServerSettings`.
        batcher: an :class:`~.vision.EmbedBatcher` (default: one made here, closed on cleanup).
    """
    import aiohttp
    from aiohttp import web

    from .vision import EmbedBatcher, ServerBusyError

    own_batcher = batcher is None
    batcher = batcher if batcher is not None else EmbedBatcher(embedder)
    codec_id = embedder.codec_id
    takes_video = embedder.takes_video
    app = web.Application(client_max_size=settings.max_body_bytes)
    stats = {"requests": 0, "cotam_images": 0, "refused": 0, "backend_errors": 0}
    app["cotam_stats"] = stats

    async def on_startup(app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout)
        # idle keep-alive connections are dropped after 2 s, before the engine's HTTP server (uvicorn: 5 s) closes them
        # under our feet (a request that waited for the tower would otherwise meet a ServerDisconnectedError)
        app["session"] = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=2.0))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()
        if own_batcher:
            await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)

    async def health(request: web.Request) -> web.Response:
        try:
            async with request.app["session"].get(f"{settings.backend_url}/health",
                                                  timeout=aiohttp.ClientTimeout(total=5)) as r:
                ok = r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        return web.json_response({"status": "ok" if ok else "backend unavailable", "pid": os.getpid(),
                                  "backend_pid": settings.backend_pid, **stats}, status=200 if ok else 503)

    async def chat(request: web.Request) -> web.StreamResponse:
        stats["requests"] += 1
        start = time.perf_counter()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            stats["refused"] += 1
            return _json_error(RequestError(f"request body over {settings.max_body_bytes} bytes", status=413))
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            stats["refused"] += 1
            return _json_error(RequestError(f"the request body is not JSON: {exc}"))
        try:
            parts = find_cotam_parts(body, settings.max_bitstream_bytes, settings.max_images,
                                     videos=takes_video)
        except RequestError as exc:
            stats["refused"] += 1
            return _json_error(exc)
        containers = []
        for part in parts:
            try:  # with a video path, image parts too are parsed under the video limits, so that frames sent as
                # an image are named as such instead of failing the item count
                container = validate_bitstream(part.data, settings.video_limits if takes_video else settings.limits,
                                               codec_id, max_items=settings.max_video_frames if part.video else 1,
                                               video=part.video)
            except Exception as exc:  # noqa: BLE001 - every parse failure is the request's
                stats["refused"] += 1
                return _json_error(exc, part.param)
            containers.append((container, part.video))
        info: dict[str, Any] = {}
        if parts:
            try:
                future = batcher.submit(containers)
            except ServerBusyError as exc:
                stats["refused"] += 1
                return _json_error(exc, status=503)
            queued = time.perf_counter()
            try:
                results = await asyncio.wrap_future(future)
            except Exception as exc:  # noqa: BLE001 - the request's own bitstream failed to decode
                stats["refused"] += 1
                index = getattr(future, "part_index", None)
                param = parts[index].param if index is not None else None
                if status_for(exc) >= 500:
                    log.exception("decoding %s failed", param or "a request's bitstreams", exc_info=exc)
                return _json_error(exc, param)
            done = time.perf_counter()
            # vLLM's LLaVA-OneVision takes no video embeddings: a video's features go as an image_embeds part (the
            # language model reads the same vectors at the placeholder's positions; the prompt text is the same)
            replacements = {(p.message, p.part): embeds_part(r.embeds) for p, r in zip(parts, results)}
            body = replace_parts(body, replacements)
            images = []
            for part, res in zip(parts, results):
                bits = 8 * len(part.data)
                images.append({"bits": bits, "pixels": res.pixels, "bpp": bits / res.pixels, "quality": res.quality,
                               "tokens": int(res.embeds.shape[0]), "decode_ms": 1e3 * res.decode_s,
                               "tower_ms": 1e3 * res.tower_s, "batch": res.batch,
                               **({"video": True, "frames": res.frames} if part.video else {})})
            total_bits = sum(i["bits"] for i in images)
            info = {"images": images, "bits": total_bits, "bpp": total_bits / sum(i["pixels"] for i in images),
                    "decode_ms": sum(i["decode_ms"] for i in images), "vision_ms": 1e3 * (done - queued),
                    "prepare_ms": 1e3 * (time.perf_counter() - start)}
            stats["cotam_images"] += len(parts)
        return await _forward(request, "/v1/chat/completions", json.dumps(body).encode(), info,
                              stream=bool(body.get("stream")))

    async def _forward(request: web.Request, path: str, payload: bytes, info: dict[str, Any],
                       stream: bool) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {"Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        for attempt in (1, 2):
            try:
                return await _post_once(request, session, path, payload, headers, info, stream)
            except aiohttp.ServerDisconnectedError as exc:  # a pooled connection the engine had just closed
                if attempt == 2:
                    stats["backend_errors"] += 1
                    log.warning("the engine closed the connection twice for %s: %s", path, exc)
                    return _json_error(RequestError(f"the vLLM engine did not answer: {exc}", status=503))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                stats["backend_errors"] += 1
                log.warning("the engine did not answer %s: %s: %s", path, type(exc).__name__, exc)
                return _json_error(RequestError(f"the vLLM engine did not answer: {type(exc).__name__} {exc}",
                                                status=503))
        raise AssertionError("unreachable")

    async def _post_once(request: web.Request, session: Any, path: str, payload: bytes, headers: dict[str, str],
                         info: dict[str, Any], stream: bool) -> web.StreamResponse:
        async with session.post(f"{settings.backend_url}{path}", data=payload, headers=headers) as r:
            if stream and r.status == 200:
                resp = web.StreamResponse(status=200, headers=_stream_headers(r, info))
                await resp.prepare(request)
                try:  # once the stream has started, a failure can only end it (no retry, no status)
                    async for chunk in r.content.iter_any():
                        await resp.write(chunk)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    stats["backend_errors"] += 1
                    log.warning("the engine's stream for %s broke off: %s: %s", path, type(exc).__name__, exc)
                await resp.write_eof()
                return resp
            data = await r.read()
            if r.status != 200:
                stats["backend_errors"] += 1
            if info and r.status == 200:
                try:
                    out = json.loads(data)
                    out["cotam"] = info
                    data = json.dumps(out).encode()
                except ValueError:
                    pass
            return web.Response(body=data, status=r.status, headers=_plain_headers(r, info))

    async def proxy(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json_error(RequestError("request body too large", status=413))
        try:
            async with session.request(request.method, f"{settings.backend_url}{request.rel_url}", data=payload,
                                       headers=headers) as r:
                resp = web.StreamResponse(status=r.status, headers={k: v for k, v in r.headers.items()
                                                                    if k.lower() not in _HOP_HEADERS})
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _json_error(RequestError(f"the vLLM engine did not answer: {type(exc).__name__} {exc}", status=503))

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    # the engine's other endpoints that take no media (an allowlist: vLLM's own multimodal endpoints, e.g.
    # /v1/responses, would accept image_embeds straight from a client)
    for method, path in _PROXIED:
        app.router.add_route(method, path, proxy)
    return app


def _info_headers(info: dict[str, Any]) -> dict[str, str]:
    if not info:
        return {}
    return {"X-CoTAM-Bits": str(info["bits"]), "X-CoTAM-BPP": f"{info['bpp']:.6g}",
            "X-CoTAM-Decode-Ms": f"{info['decode_ms']:.3f}", "X-CoTAM-Images": str(len(info["images"]))}


def _plain_headers(r: Any, info: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": r.headers.get("Content-Type", "application/json")}
    headers.update(_info_headers(info))
    return headers


def _stream_headers(r: Any, info: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": r.headers.get("Content-Type", "text/event-stream"), "Cache-Control": "no-cache"}
    headers.update(_info_headers(info))
    return headers
