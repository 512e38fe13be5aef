"""The CoTAM side of the server: bitstreams → the host's image embeddings (what vLLM's language model reads).

::

    Container ─tower.decode (entropy decode + synthesis, CPU)─▶ x̂, ŷ
        ─tower.host_inputs (the host's image processor on x̂, ŷ on the patch grid)─▶ views, latents
        ─host vision encoder with Adapter(ŷ) added to its embeddings ─▶ hidden state (vision_feature_layer)
        ─host projector─▶ (n_tokens, hidden) per image ─▶ vLLM ``image_embeds``

:class:`CoTAMEmbedder` holds the CoTAM model without its language model (vLLM has that); :class:`EmbedBatcher`
runs it on one worker thread and batches the requests that arrive together (one encoder + projector pass over all
their views). Each bitstream is decoded on its own, so one that fails (a corrupted payload whose symbols do not
check out) fails only its own request.
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


class ServerBusyError(RuntimeError):
    """The tower's queue is full (HTTP 503)."""

    status = 503


@dataclass
class ImageEmbedding:
    """The host's embeddings of one decoded bitstream.

    Attributes:
        embeds: (n_tokens, hidden) projector output, in the language model's dtype, on the CPU.
        decode_s: seconds of parsing-free decoding (entropy decoding + synthesis) of this bitstream.
        tower_s: seconds of the batched encoder + adapter + projector pass this image was part of.
        batch: images in that pass.
        quality: the container's base quality.
        pixels: pixels of the picture the container records (its original size).
    """

    embeds: torch.Tensor
    decode_s: float
    tower_s: float
    batch: int
    quality: int
    pixels: int


class CoTAMEmbedder:
    """A CoTAM LLaVA model's vision side: decode, tower + adapter, projector.

    Args:
        model: a CoTAM model (e.g. from :func:`~cotam_llava.models.loading.load_cotam`); its language model may
            already be dropped (:meth:`drop_language_model`).
    """

    def __init__(self, model: Any) -> None:
        from ..models.modeling_cotam import CoTAMLlavaForConditionalGeneration

        if not isinstance(model, CoTAMLlavaForConditionalGeneration):
            raise ConfigError(f"cotam serve serves CoTAM LLaVA models; got {type(model).__name__} (LLaVA-OneVision and "
                              "InternVL are not on the serving path yet)")
        self.model = model.eval()
        self.tower = model.model.vision_tower
        if self.tower.output_dtype is None:
            self.tower.output_dtype = model.get_input_embeddings().weight.dtype
        self.limits = ParseLimits(max_items=1)

    @classmethod
    def from_pretrained(cls, model: str, cotam: str | None = None, device: str | None = None,
                        dtype: str | None = None, keep_language_model: bool = False) -> "CoTAMEmbedder":
        """Load a CoTAM folder (or a stock LLaVA host + ``cotam`` codec folder) without its language model.

        The language model is built with no decoder layers (their weights are never read), then it and ``lm_head``
        are released: a 7B host costs its tower, projector and token embeddings, not 7B. ``keep_language_model``
        loads the whole model instead.
        """
        from ..models.loading import load_cotam

        net, _ = load_cotam(model, cotam, device=device, dtype=dtype, language_model_layers=keep_language_model)
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

    def decode(self, container: Container) -> tuple[Any, float]:
        """(the decoded image, seconds) of a parsed, validated one-image container."""
        start = time.perf_counter()
        [[decoded]] = self.tower.decode([container])
        return decoded, time.perf_counter() - start

    def embed_decoded(self, decoded: Sequence[Any]) -> list[torch.Tensor]:
        """One (n_tokens, hidden) tensor per decoded image: one batched encoder + projector pass."""
        base = self.model.model
        cfg = self.model.config
        views = self.tower.host_inputs(list(decoded), anyres=False)
        with torch.inference_mode(), self.tower.attached_latents(views.latents):
            # the host's own get_image_features on the cut views (what CoTAMLlavaModel does after decoding)
            out = super(type(base), base).get_image_features(
                pixel_values=views.pixel_values,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            )
        feats = out.pooler_output
        return [f.detach().to("cpu").contiguous() for f in feats]

    def embed(self, containers: Sequence[Container]) -> list[ImageEmbedding]:
        """Decode and embed containers (no error isolation: see :class:`EmbedBatcher` for that)."""
        decoded, times = zip(*(self.decode(c) for c in containers))
        start = time.perf_counter()
        feats = self.embed_decoded(decoded)
        tower_s = time.perf_counter() - start
        return [ImageEmbedding(f, t, tower_s, len(feats), c.items[0].base_quality, _pixels(c))
                for f, t, c in zip(feats, times, containers)]


class _Dropped(nn.Module):
    """Stands in for a released language model."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this CoTAM model's language model was released: vLLM runs it")


def _pixels(container: Container) -> int:
    w, h = container.items[0].orig_size
    return int(w) * int(h)


class EmbedBatcher:
    """Runs a :class:`CoTAMEmbedder` on one worker thread, batching requests that wait together.

    Args:
        embedder: the vision side.
        max_batch: most images in one encoder pass.
        max_queue: most images waiting; :meth:`submit` raises :class:`ServerBusyError` beyond.
        threads: torch intra-op threads of the worker (None: torch's default).
    """

    def __init__(self, embedder: CoTAMEmbedder, max_batch: int = 8, max_queue: int = 64, threads: int | None = None) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ConfigError("max_batch and max_queue must be at least 1")
        self.embedder = embedder
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._threads = threads
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="cotam-tower", daemon=True)
        self._worker.start()

    def submit(self, container: Container) -> cf.Future:
        """Queue one validated container; the future resolves to an :class:`ImageEmbedding` or its error."""
        if self._stop.is_set():
            raise ServerBusyError("the CoTAM tower is shutting down")
        fut: cf.Future = cf.Future()
        try:
            self._queue.put_nowait((container, fut, time.perf_counter()))
        except queue.Full:
            raise ServerBusyError(f"the CoTAM tower has {self._queue.maxsize} images waiting; retry later") from None
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch it is on; images still waiting fail with :class:`ServerBusyError`."""
        self._stop.set()
        try:
            self._queue.put_nowait((None, None, 0.0))  # wake the worker if it waits
        except queue.Full:
            pass  # it is busy and sees the flag after this batch
        self._worker.join(timeout)

    def _run(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        while not self._stop.is_set():
            item = self._queue.get()
            if item[0] is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt[0] is None:
                    self._stop.set()
                    break
                batch.append(nxt)
            self._process(batch)
        while True:  # fail what is left
            try:
                _, fut, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if fut is not None and not fut.done():
                fut.set_exception(ServerBusyError("the CoTAM tower stopped"))

    def _process(self, batch: list[tuple[Container, cf.Future, float]]) -> None:
        good = []
        for container, fut, queued in batch:
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                decoded, decode_s = self.embedder.decode(container)
            except BaseException as exc:  # noqa: BLE001 - the request's own failure, reported to it
                fut.set_exception(exc)
                continue
            good.append((container, fut, decoded, decode_s))
        if not good:
            return
        start = time.perf_counter()
        try:
            feats = self.embedder.embed_decoded([g[2] for g in good])
        except BaseException as exc:  # noqa: BLE001
            for g in good:
                g[1].set_exception(exc)
            return
        tower_s = time.perf_counter() - start
        for (container, fut, _, decode_s), f in zip(good, feats):
            fut.set_result(ImageEmbedding(f, decode_s, tower_s, len(good), container.items[0].base_quality,
                                          _pixels(container)))
