"""The CoTAM side of the server: bitstreams → the host's image embeddings (what vLLM's language model reads).

::

    Container ─tower.decode (entropy decode + synthesis, CPU)─▶ x̂, ŷ (an image, or a video's frames)
        ─tower.host_inputs / frame_inputs (the host's image processing on x̂, ŷ on the patch grid)─▶ views, latents
        ─host vision encoder with Adapter(ŷ) added to its embeddings ─▶ hidden state (vision_feature_layer)
        ─the host's own get_image_features / get_video_features (projector; LLaVA-OneVision: AnyRes packing with
         image newlines, video pooling)─▶ (n_tokens, hidden) per part ─▶ vLLM ``image_embeds``

:class:`CoTAMEmbedder` holds the CoTAM model without its language model (vLLM has that); :class:`EmbedBatcher`
runs it on one worker thread and batches the requests that arrive together (one encoder + projector pass over all
their images); a request's parts stay together and it fails as a whole. Each bitstream is decoded on its own,
so one that fails (a corrupted payload whose symbols do not check out) fails only its own request.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..codec.container import Container, ParseLimits
from ..errors import ConfigError

__all__ = ["ImageEmbedding", "CoTAMEmbedder", "EmbedBatcher", "ServerBusyError"]

#: a request's part for the tower: (validated container, whether it is a video)
Part = tuple[Container, bool]


class ServerBusyError(RuntimeError):
    """The tower's queue is full (HTTP 503)."""

    status = 503


@dataclass
class ImageEmbedding:
    """The host's embeddings of one decoded bitstream (an image, or a video's frames).

    Attributes:
        embeds: (n_tokens, hidden) the host's features for the language model, in its dtype, on the CPU.
        decode_s: seconds of parsing-free decoding (entropy decoding + synthesis) of this bitstream.
        tower_s: seconds of the batched encoder + adapter + projector pass this part was part of.
        batch: parts in that pass.
        quality: the container's base quality (its first item's).
        pixels: pixels the container records (its items' original sizes; a video counts every frame).
        frames: coded items (1 for an image).
    """

    embeds: torch.Tensor
    decode_s: float
    tower_s: float
    batch: int
    quality: int
    pixels: int
    frames: int = 1


class CoTAMEmbedder:
    """A CoTAM LLaVA, LLaVA-OneVision or InternVL model's vision side: decode, tower + adapter, the host's projector.

    Args:
        model: a CoTAM model (e.g. from :func:`~cotam_llava.models.loading.load_cotam`); its language model may
            already be dropped (:meth:`drop_language_model`).
    """

    def __init__(self, model: Any) -> None:
        from ..models.modeling_cotam import (CoTAMInternVLForConditionalGeneration,
                                             CoTAMLlavaForConditionalGeneration,
                                             CoTAMLlavaOnevisionForConditionalGeneration)

        if isinstance(model, CoTAMLlavaOnevisionForConditionalGeneration):
            self.host = "llava_onevision"
        elif isinstance(model, CoTAMLlavaForConditionalGeneration):
            self.host = "llava"
        elif isinstance(model, CoTAMInternVLForConditionalGeneration):
            self.host = "internvl"
        else:
            raise ConfigError(f"cotam serve serves CoTAM LLaVA, LLaVA-OneVision and InternVL models; got "
                              f"{type(model).__name__}")
        self.model = model.eval()
        self.tower = model.model.vision_tower
        if self.tower.output_dtype is None:
            self.tower.output_dtype = model.get_input_embeddings().weight.dtype
        self.limits = ParseLimits(max_items=1)

    @classmethod
    def from_pretrained(cls, model: str, cotam: str | None = None, device: str | None = None,
                        dtype: str | None = None, keep_language_model: bool = False) -> "CoTAMEmbedder":
        """Load a CoTAM folder (or a stock host + ``cotam`` codec folder) without its language model or processor.

        The language model is built with no decoder layers (their weights are never read), then it and ``lm_head``
        are released: a 7B host costs its tower, projector and token embeddings, not 7B. ``keep_language_model``
        loads the whole model instead.
        """
        from ..models.loading import load_cotam

        net, _ = load_cotam(model, cotam, device=device, dtype=dtype, language_model_layers=keep_language_model,
                            with_processor=False)
        out = cls(net)
        if not keep_language_model:
            out.drop_language_model()
        return out

    def drop_language_model(self) -> None:
        """Release the language model and ``lm_head`` (vLLM runs them); the tower and projector stay."""
        base = self.model.model
        self.tower.output_dtype = self.tower.output_dtype or self.model.get_input_embeddings().weight.dtype
        if not isinstance(base.language_model, _Dropped):
            base.language_model = _Dropped()
            self.model.lm_head = _Dropped()

    @property
    def codec_id(self) -> bytes:
        return self.tower.codec.codec_id

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def takes_video(self) -> bool:
        """Whether the host has a video path (LLaVA-OneVision)."""
        return self.host == "llava_onevision"

    def decode(self, container: Container) -> tuple[list[Any], float]:
        """(the decoded items: one image or a video's frames, seconds) of a parsed, validated container."""
        start = time.perf_counter()
        [decoded] = self.tower.decode([container])
        return decoded, time.perf_counter() - start

    def embed_decoded(self, requests: Sequence[Sequence[tuple[list[Any], bool]]]) -> list[list[torch.Tensor]]:
        """(n_tokens, hidden) per part of each request, as the host's own feature methods make them.

        Args:
            requests: per request, its parts as (decoded items, is a video).

        All images of all requests go through one encoder + projector pass; each video through its own.
        LLaVA-OneVision AnyRes-tiles every image, as the CoTAM processor (like the host processor given a flat
        image list) counts its placeholder tokens.
        """
        base = self.model.model
        cfg = self.model.config
        host = dict(vision_feature_layer=cfg.vision_feature_layer,
                    vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        host_image_features = super(type(base), base).get_image_features
        out: list[list[Any]] = [[None] * len(parts) for parts in requests]
        images = [(r, k, items[0]) for r, parts in enumerate(requests) for k, (items, video) in enumerate(parts)
                  if not video]
        with torch.inference_mode():
            if images:
                decoded = [d for _, _, d in images]
                if self.host == "llava_onevision":
                    feats = base._cotam_features_of(host_image_features, base._cotam_views_of(decoded, anyres=True),
                                                    dict(host, vision_aspect_ratio=cfg.vision_aspect_ratio),
                                                    view_sizes=True).pooler_output
                else:
                    feats = base._cotam_features_of(host_image_features, base._cotam_views_of(decoded, anyres=False),
                                                    host).pooler_output
                for (r, k, _), f in zip(images, feats):
                    out[r][k] = f
            for r, parts in enumerate(requests):
                for k, (items, video) in enumerate(parts):
                    if video:
                        out[r][k] = base._cotam_video_features([items], **host).pooler_output[0]
        return [[f.detach().to("cpu").contiguous() for f in feats] for feats in out]

    def embed(self, parts: Sequence[Container | Part]) -> list[ImageEmbedding]:
        """Decode and embed one request's parts (containers, or (container, is a video)); no error isolation: see
        :class:`EmbedBatcher` for that."""
        parts = _as_parts(parts)
        decoded, times = zip(*(self.decode(c) for c, _ in parts))
        start = time.perf_counter()
        [feats] = self.embed_decoded([[(d, v) for d, (_, v) in zip(decoded, parts)]])
        tower_s = time.perf_counter() - start
        return [_embedding(f, t, tower_s, len(feats), c) for f, t, (c, _) in zip(feats, times, parts)]


class _Dropped(nn.Module):
    """Stands in for a released language model."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this CoTAM model's language model was released: vLLM runs it")


def _as_parts(parts: Sequence[Container | Part]) -> list[Part]:
    """(container, is a video) for each part; a bare container is an image."""
    return [p if isinstance(p, tuple) else (p, False) for p in parts]


def _embedding(embeds: torch.Tensor, decode_s: float, tower_s: float, batch: int, container: Container) -> ImageEmbedding:
    pixels = sum(int(item.orig_size[0]) * int(item.orig_size[1]) for item in container.items)
    return ImageEmbedding(embeds, decode_s, tower_s, batch, container.items[0].base_quality, pixels,
                          len(container.items))


class EmbedBatcher:
    """Runs a :class:`CoTAMEmbedder` on one worker thread, batching the requests that wait together.

    Args:
        embedder: the vision side.
        max_batch: most parts (images and videos) in one pass; a request with more gets a pass of its own.
        max_queue: most parts waiting; :meth:`submit` raises :class:`ServerBusyError` beyond.
        threads: torch intra-op threads of the worker (None: torch's default).
    """

    def __init__(self, embedder: CoTAMEmbedder, max_batch: int = 8, max_queue: int = 64, threads: int | None = None) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ConfigError("max_batch and max_queue must be at least 1")
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0  # parts queued, not yet taken by the worker
        self._lock = threading.Lock()
        self._threads = threads
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="cotam-tower", daemon=True)
        self._worker.start()

    def submit(self, parts: Container | Sequence[Container | Part]) -> cf.Future:
        """Queue one request's validated parts (containers, or (container, is a video)); the future resolves to
        their :class:`ImageEmbedding` list, or to the first failing part's error (the request fails as a whole; the
        future's ``part_index`` says which part failed to decode)."""
        job = _as_parts([parts] if isinstance(parts, Container) else parts)
        if not job:
            raise ConfigError("nothing to embed")
        if self._stop.is_set():
            raise ServerBusyError("the CoTAM tower is shutting down")
        with self._lock:
            if self._waiting + len(job) > self.max_queue:
                raise ServerBusyError(f"the CoTAM tower has {self._waiting} images waiting; retry later")
            self._waiting += len(job)
        fut: cf.Future = cf.Future()
        self._queue.put((job, fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch it is on; requests still waiting fail with :class:`ServerBusyError`."""
        self._stop.set()
        self._queue.put((None, None))  # wake the worker if it waits
        self._worker.join(timeout)

    def _take(self, item: tuple[Any, Any]) -> tuple[Any, Any]:
        if item[0] is not None:
            with self._lock:
                self._waiting -= len(item[0])
        return item

    def _run(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        pending = None
        while not self._stop.is_set():
            item = pending if pending is not None else self._take(self._queue.get())
            pending = None
            if item[0] is None:
                break
            batch, size = [item], len(item[0])
            while size < self.max_batch:
                try:
                    nxt = self._take(self._queue.get_nowait())
                except queue.Empty:
                    break
                if nxt[0] is None:
                    self._stop.set()
                    break
                if size + len(nxt[0]) > self.max_batch:
                    pending = nxt  # the next pass starts with it
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._process(batch)
        left = [pending] if pending is not None else []
        while True:  # fail what is left
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for _, fut in left:
            if fut is not None and not fut.done():
                fut.set_exception(ServerBusyError("the CoTAM tower stopped"))

    def _process(self, batch: list[tuple[list[Part], cf.Future]]) -> None:
        good = []
        for job, fut in batch:
            if not fut.set_running_or_notify_cancel():
                continue
            decoded = []
            for k, (container, _) in enumerate(job):
                try:
                    decoded.append(self.embedder.decode(container))
                except BaseException as exc:  # noqa: BLE001 - the request's own failure, reported to it
                    fut.part_index = k  # which part failed
                    fut.set_exception(exc)
                    break
            else:
                good.append((job, fut, decoded))
        if not good:
            return
        start = time.perf_counter()
        try:
            feats = self.embedder.embed_decoded([[(d, v) for (d, _), (_, v) in zip(decoded, job)]
                                                 for job, _, decoded in good])
        except BaseException as exc:  # noqa: BLE001
            for _, fut, _ in good:
                fut.set_exception(exc)
            return
        tower_s = time.perf_counter() - start
        n = sum(len(job) for job, _, _ in good)
        for (job, fut, decoded), fs in zip(good, feats):
            fut.set_result([_embedding(f, t, tower_s, n, c) for f, (_, t), (c, _) in zip(fs, decoded, job)])
