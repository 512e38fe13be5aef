"""``CoTAMProcessor``: chat template + text + bitstreams (or images / videos, encoded on the edge side) → model inputs.

::

    images / videos ─EdgeEncoder (codec, guidance)─▶ .cotam bytes ─┐
    .cotam bytes ─parse headers (sizes, frames)─────────────────────┤
    text ─the host processor, given stand-in pictures of the decoded sizes─▶ input_ids with the host's own
          image-token expansion (AnyRes ``image_sizes`` included); video tokens expanded as the host does
    → BatchFeature(input_ids, attention_mask, pixel_values = packed bytes, [image_sizes, batch_num_images],
                   [pixel_values_videos = packed bytes])

The bitstreams travel as ``uint8`` tensors (:func:`~cotam_llava.codec.transport.pack_bitstreams`) in the slots where
the stock processor puts pixels, so ``model.generate(**inputs)`` works unchanged.

``CoTAMProcessor`` is a transformers ``ProcessorMixin`` (``AutoProcessor``, ``pipeline("image-text-to-text")``,
``save_pretrained`` / ``from_pretrained``, ``post_process_image_text_to_text``); its sub-processors are the host's.
Every call records what went into the inputs in :attr:`CoTAMProcessor.last_coded` (real container bits, one
:class:`CodedMedia` per image or video) and hands the same records to the listeners of
:meth:`CoTAMProcessor.add_encode_listener`.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from transformers.processing_utils import ProcessorMixin

from ..codec.container import MAGIC, Container, ParseLimits, ResizeMode, parse
from ..codec.model import CoTAMELIC
from ..codec.configuration import CODEC_SUBFOLDER
from ..codec.loading import is_standard_codec, load_codec, model_type_of
from ..codec.standard import STANDARD_MODEL_TYPE
from ..errors import CheckpointError, ConfigError, ImageInputError
from ..imageio import ImageLike, image_size
from ..vision.edge import EdgeEncoder
from ..codec.transport import pack_bitstreams
from ..vision.tower_config import CoTAMTowerConfig

__all__ = ["CoTAMProcessor", "CodedMedia", "PROCESSOR_CONFIG_NAME"]

#: The CoTAM settings of a saved processor (host processor class + tower config); transformers' own
#: ``processor_config.json`` beside it names ``CoTAMProcessor`` and holds the host's settings.
PROCESSOR_CONFIG_NAME = "cotam_processor.json"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
#: keywords transformers' AutoProcessor / pipeline add that mean nothing to the host's from_pretrained here
_AUTO_KWARGS = ("_from_auto", "_from_pipeline", "trust_remote_code", "_commit_hash")


@dataclass(frozen=True)
class CodedMedia:
    """One ``.cotam`` container a processor call put into the model inputs (see :attr:`CoTAMProcessor.last_coded`).

    Attributes:
        kind: "image" or "video".
        bits: ``8 × len(container)``, header included (the rate the DESIGN's protocol counts).
        pixels: ``width × height`` of the input picture (of the coded picture when a bitstream was given);
            None for a video.
        bpp: ``bits / pixels`` (the definition ``cotam chat`` reports); None for a video.
        items: coded pictures in the container (frames for a video).
        quality: base quality of the first item.
        encoded_here: True when this processor coded it, False when a bitstream was given.
    """

    kind: str
    bits: int
    pixels: int | None
    bpp: float | None
    items: int
    quality: int
    encoded_here: bool


def _is_bitstream_file(path: Path) -> bool:
    if path.suffix.lower() == ".cotam":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _read_stream(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"cannot read {path}: {exc}") from exc


def _as_items(value: Any) -> list[Any]:
    """One input or a list of them → a flat list (nested lists, as pipelines pass per prompt, are flattened)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _as_items(v)] if any(isinstance(v, (list, tuple)) for v in value) else list(value)
    return [value]


def _video_items(value: Any) -> list[Any]:
    """One video (a path, or container bytes) or a list of videos (each a path, container bytes or a frame list)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [value]
    return list(value)


def _media_item(item: Any) -> tuple[str, Any]:
    """("stream", container bytes) for a bitstream (bytes starting with the magic number, a ``.cotam`` file or a file
    starting with the magic number), else ("image", a picture: PIL / array / tensor / path / decoded image bytes)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if data.startswith(MAGIC):
            return "stream", data
        try:
            with Image.open(io.BytesIO(data)) as img:
                return "image", img.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"{len(data)} bytes are neither a .cotam bitstream nor an image file: {exc}") from exc
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_file() and _is_bitstream_file(path):
            return "stream", _read_stream(path)
        return "image", path
    return "image", item


_IMAGE_SOURCES = ("image", "path", "url", "base64")
_VIDEO_SOURCES = ("video", "path", "url")


def _conversation_media(conversation: list[dict[str, Any]] | list[list[dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """The pictures and videos a conversation (or a batch of them) carries, in prompt order.

    Content entries follow transformers' chat format: ``{"type": "image", "image" | "path" | "url" | "base64": ...}``
    (OpenAI's ``{"type": "image_url", "image_url": {"url": ...}}`` too) and ``{"type": "video", "video" | "path": ...}``;
    URLs and base64 strings are read with transformers' ``load_image``. Entries without a source only mark a place.
    """
    from transformers.image_utils import load_image

    batch = conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
    images: list[Any] = []
    videos: list[Any] = []
    for messages in batch:
        for message in messages:
            content = message.get("content")
            for entry in content if isinstance(content, list) else ():
                kind = entry.get("type")
                if kind == "image_url":  # OpenAI's format
                    url = entry.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if url is not None:
                        images.append(load_image(url))
                elif kind == "image":
                    key = next((k for k in _IMAGE_SOURCES if entry.get(k) is not None), None)
                    if key is not None:
                        images.append(load_image(entry[key]) if key in ("url", "base64") else entry[key])
                elif kind == "video":
                    key = next((k for k in _VIDEO_SOURCES if entry.get(k) is not None), None)
                    if key is not None:
                        videos.append(entry[key])
    return images, videos


def _picture_size(container: Container) -> tuple[int, int]:
    item = container.items[0]
    return item.orig_size if item.resize_mode == ResizeMode.PAD else item.canvas_size


class CoTAMProcessor(ProcessorMixin):
    """Host processor (tokenizer, chat template, image processor) + CoTAM's edge encoder.

    A transformers ``ProcessorMixin`` whose sub-processors (``tokenizer``, ``image_processor``, ``chat_template``)
    are the host processor's own objects; ``AutoProcessor.from_pretrained(folder)`` and
    ``pipeline("image-text-to-text", model=folder)`` resolve to it once ``cotam_llava`` is imported.

    Args:
        host: the stock processor (``LlavaProcessor``, ``LlavaOnevisionProcessor``, ``InternVLProcessor``).
        tower_config: the model's :class:`CoTAMTowerConfig` (canvas, crop, quality, guidance).
        codec: the codec, needed only to encode images or videos here (bitstreams need none).
        use_guidance: run the configured guidance when encoding.

    Attributes:
        last_coded: the containers of the most recent call (``__call__`` / ``apply_chat_template(tokenize=True)``),
            images first then videos, in prompt order: a tuple of :class:`CodedMedia` (bits, bpp...).
    """

    def __init__(self, host: Any, tower_config: CoTAMTowerConfig, codec: CoTAMELIC | None = None, use_guidance: bool = True) -> None:
        # ProcessorMixin.__init__ is not called: it would take the sub-processors as arguments and check their
        # classes; here they are the host's, reached through the properties below
        if not isinstance(host, ProcessorMixin):
            raise ConfigError(f"CoTAMProcessor wraps a transformers processor (LlavaProcessor, ...), got {type(host).__name__}")
        self.host = host
        self.tower_config = tower_config
        self.edge = EdgeEncoder(codec, tower_config, use_guidance) if codec is not None else None
        self.limits = ParseLimits()
        self.last_coded: tuple[CodedMedia, ...] = ()
        self._listeners: list[Callable[[tuple[CodedMedia, ...]], None]] = []

    # ------------------------------------------------------------------ host delegation
    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]

    @property
    def tokenizer(self) -> Any:
        return self.host.tokenizer

    @property
    def image_processor(self) -> Any:
        return self.host.image_processor

    @property
    def chat_template(self) -> Any:
        return self.host.chat_template

    @chat_template.setter
    def chat_template(self, value: Any) -> None:
        self.host.chat_template = value

    def add_encode_listener(self, listener: Callable[[tuple[CodedMedia, ...]], None]) -> None:
        """Call ``listener(records)`` after every processor call (``records`` as :attr:`last_coded`, empty for a
        text-only call); for a pipeline, each of its inputs is one call."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_encode_listener(self, listener: Callable[[tuple[CodedMedia, ...]], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def to_dict(self) -> dict[str, Any]:
        """The host processor's settings with ``processor_class`` (what ``processor_config.json`` holds) plus the
        CoTAM settings ``cotam_processor.json`` holds (``host_processor_class``, ``cotam``: the tower config)."""
        data = self.host.to_dict()
        data["processor_class"] = type(self).__name__
        data["host_processor_class"] = type(self.host).__name__
        data["cotam"] = self.tower_config.to_dict()
        return data

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]] | list[list[dict[str, Any]]],
        chat_template: str | None = None,
        tokenize: bool = False,
        return_dict: bool = False,
        quality: int | None = None,
        num_frames: int = 16,
        return_tensors: str = "pt",
        processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The host's chat template (``{"type": "image"}`` / ``{"type": "video"}`` entries mark the inputs).

        With ``tokenize=True`` the conversation's pictures and videos (content entries with an ``image``,
        ``path``, ``url`` or ``base64``; ``video`` or ``path`` for videos) are coded into real bitstreams here:
        the result is exactly ``self(text=<the rendered prompt>, images=..., videos=...)`` — never the host's
        float pixels.

        Args:
            conversation: one conversation (a list of messages) or a batch of them.
            tokenize: False: the prompt text. True: the model inputs (a ``BatchFeature`` with ``return_dict=True``,
                else their ``input_ids``).
            quality, num_frames, return_tensors: as for :meth:`__call__`.
            processor_kwargs: more keyword arguments for :meth:`__call__` (``padding``, ``bitstreams``...).
            **kwargs: for the host's template (``add_generation_prompt``, ``tools``, template variables...).

        Raises:
            ConfigError: ``return_assistant_tokens_mask`` with ``tokenize=True`` (not supported on the CoTAM path).
        """
        if not tokenize:
            return self.host.apply_chat_template(conversation, chat_template, **kwargs)
        if kwargs.get("return_assistant_tokens_mask"):
            raise ConfigError("CoTAMProcessor.apply_chat_template does not return assistant token masks")
        prompt = self.host.apply_chat_template(conversation, chat_template, **kwargs)
        images, videos = _conversation_media(conversation)
        call_kwargs = dict(processor_kwargs or {})
        first = prompt if isinstance(prompt, str) else prompt[0]
        bos = self.tokenizer.bos_token
        if bos is not None and first.startswith(bos):  # as the host's template path: the template wrote it
            call_kwargs.setdefault("add_special_tokens", False)
        features = self(text=prompt, images=images or None, videos=videos or None, quality=quality,
                        num_frames=num_frames, return_tensors=return_tensors, **call_kwargs)
        return features if return_dict else features["input_ids"]

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.host.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.host.decode(*args, **kwargs)

    # ------------------------------------------------------------------ edge side
    def _edge(self) -> EdgeEncoder:
        if self.edge is None:
            raise ConfigError("this processor has no codec: load it with a codec to encode images, or pass bitstreams")
        return self.edge

    def encode_images(self, images: Sequence[ImageLike], quality: int | None = None) -> list[bytes]:
        """Edge side: one container per image."""
        return [self._edge().encode_image(image, quality) for image in images]

    def encode_videos(self, videos: Sequence[Any], num_frames: int = 16, quality: int | None = None) -> list[bytes]:
        """Edge side: one container per video (a file path or a list of frames)."""
        return [self._edge().encode_video(video, num_frames, quality) for video in videos]

    # ------------------------------------------------------------------ cloud side
    def _require_video(self) -> None:
        if getattr(self.host, "num_image_tokens", None) is None or not getattr(self.host, "video_token", None):
            raise ConfigError(f"{type(self.host).__name__} hosts take no video on the CoTAM path; use LLaVA-OneVision")

    def _video_tokens(self, num_frames: int) -> int:
        """Placeholder tokens of one video, as the host's own processor counts them (LLaVA-OneVision)."""
        per_frame = self.host.num_image_tokens
        pooled = math.ceil(int(math.sqrt(per_frame)) / 2)
        return num_frames * pooled * pooled + 1  # +1: the newline token

    def __call__(
        self,
        text: str | list[str],
        bitstreams: bytes | str | os.PathLike | Sequence[bytes | str | os.PathLike] | None = None,
        images: ImageLike | bytes | Sequence[ImageLike | bytes] | None = None,
        videos: Any = None,
        video_bitstreams: bytes | str | os.PathLike | Sequence[bytes | str | os.PathLike] | None = None,
        quality: int | None = None,
        num_frames: int = 16,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> Any:
        """Model inputs for ``text`` with image placeholders filled from bitstreams.

        Args:
            text: prompt(s) containing the host's image (and video) tokens, e.g. from :meth:`apply_chat_template`.
            bitstreams: one ``.cotam`` container per image, in prompt order: bytes or a file (one, or a list).
            images: pictures to encode here (needs a codec), one or a list (nested lists are flattened): PIL images,
                arrays, tensors, image files, or the bytes of an image file; a ``.cotam`` file or container bytes
                among them is taken as it is (not re-encoded). Bitstreams come first, then ``images``.
            videos, video_bitstreams: video files / frame lists to encode, or containers of frames (LLaVA-OneVision);
                one (a path or bytes) or a list.
            quality: edge quality for ``images`` / ``videos`` (default: the config's).
            num_frames: frames sampled from each video file.
            **kwargs: passed to the host processor (``padding``, ...).

        Returns:
            A ``BatchFeature`` for ``model(**inputs)`` / ``model.generate(**inputs)``; :attr:`last_coded` says
            what went in (bits, bpp).

        Raises:
            ImageInputError: unreadable inputs, a picture among ``bitstreams``, counts that do not match the prompt.
        """
        if return_tensors != "pt":
            raise ConfigError("CoTAMProcessor returns PyTorch tensors only (return_tensors='pt')")
        streams: list[bytes] = []
        sources: list[int | None] = []  # pixels of the input picture; None: a bitstream was given
        for item in _as_items(bitstreams):
            kind, value = _media_item(item)
            if kind != "stream":
                raise ImageInputError(f"bitstreams takes .cotam containers (bytes or files), got {type(item).__name__} "
                                      f"{str(item)[:80]!r}; pass pictures as images=")
            streams.append(value)
            sources.append(None)
        for item in _as_items(images):
            kind, value = _media_item(item)
            if kind == "stream":
                streams.append(value)
                sources.append(None)
            else:
                width, height = image_size(value)
                streams.append(self._edge().encode_image(value, quality))
                sources.append(width * height)
        video_streams: list[bytes] = []
        video_sources: list[bool] = []  # coded here
        for item in _video_items(video_bitstreams):
            kind, value = _media_item(item)
            if kind != "stream":
                raise ImageInputError(f"video_bitstreams takes .cotam containers (bytes or files), got {str(item)[:80]!r}")
            video_streams.append(value)
            video_sources.append(False)
        for item in _video_items(videos):
            kind, value = _media_item(item) if isinstance(item, (bytes, bytearray, memoryview, str, os.PathLike)) else ("video", item)
            if kind == "stream":
                video_streams.append(value)
                video_sources.append(False)
            else:
                video_streams.append(self._edge().encode_video(item, num_frames, quality))
                video_sources.append(True)
        if video_streams:
            self._require_video()
        texts = [text] if isinstance(text, str) else list(text)

        image_containers = [parse(s, self.limits) for s in streams]
        for i, c in enumerate(image_containers):
            if len(c.items) != 1 or c.items[0].is_video_frame:
                raise ImageInputError(f"image bitstream {i} holds {len(c.items)} items; give one container per image "
                                      "and pass videos as video_bitstreams")
        video_containers = [parse(s, self.limits) for s in video_streams]
        if video_streams:
            token = self.host.video_token
            counts = [len(c.items) for c in video_containers]
            expanded, k = [], 0
            for t in texts:
                parts = t.split(token)
                if k + len(parts) - 1 > len(counts):
                    raise ImageInputError(f"the prompt has more {token} tokens than videos ({len(counts)})")
                out = parts[0]
                for part in parts[1:]:
                    out += token * self._video_tokens(counts[k]) + part
                    k += 1
                expanded.append(out)
            if k != len(counts):
                raise ImageInputError(f"{len(counts)} videos but {k} {token} tokens in the prompt")
            texts = expanded

        stand_ins = [np.zeros((h, w, 3), dtype=np.uint8) for w, h in (_picture_size(c) for c in image_containers)]
        host_kwargs = dict(kwargs)
        if "crop_to_patches" in self.tower_config.image_processor:
            host_kwargs["crop_to_patches"] = False
        # the video tokens are expanded above; hide them from the host's input validation, which would look
        # for the (pixel) videos it expands itself
        video_token = getattr(self.host, "video_token", None)
        if video_streams:
            self.host.video_token = None
        try:
            features = self.host(text=texts, images=stand_ins or None, return_tensors="pt", **host_kwargs)
        finally:
            if video_streams:
                self.host.video_token = video_token
        if streams:
            features["pixel_values"] = pack_bitstreams(streams)
        if video_streams:
            features["pixel_values_videos"] = pack_bitstreams(video_streams)
        self._record(streams, image_containers, sources, video_streams, video_containers, video_sources)
        return features

    def _record(self, streams: list[bytes], containers: list[Container], sources: list[int | None],
                video_streams: list[bytes], video_containers: list[Container], video_sources: list[bool]) -> None:
        records = []
        for stream, container, source in zip(streams, containers, sources):
            width, height = container.items[0].orig_size
            pixels = source if source is not None else width * height
            bits = 8 * len(stream)
            records.append(CodedMedia("image", bits, pixels, bits / pixels, len(container.items),
                                      container.items[0].base_quality, source is not None))
        for stream, container, here in zip(video_streams, video_containers, video_sources):
            records.append(CodedMedia("video", 8 * len(stream), None, None, len(container.items),
                                      container.items[0].base_quality if container.items else 0, here))
        self.last_coded = tuple(records)
        for listener in list(self._listeners):
            listener(self.last_coded)

    # ------------------------------------------------------------------ (de)serialisation
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Save the host processor (tokenizer, chat template, image processor), its ``processor_config.json`` naming
        ``CoTAMProcessor`` (so ``AutoProcessor`` and pipelines resolve to this class) and the CoTAM settings
        (``cotam_processor.json``: the host processor class and the tower config).

        Raises:
            ConfigError: ``push_to_hub=True`` (save, then upload the folder with ``huggingface_hub.upload_folder``).
        """
        if push_to_hub:
            raise ConfigError("CoTAMProcessor.save_pretrained does not push: save the folder, then upload it with "
                              "huggingface_hub.upload_folder")
        from transformers.utils import PROCESSOR_NAME

        path = Path(save_directory)
        absent = [name for name in getattr(self.host, "get_attributes", lambda: [])() if getattr(self.host, name, None) is None]
        if absent:  # transformers' own save fails on them with an AttributeError deep inside
            raise ConfigError(
                f"the host processor {type(self.host).__name__} cannot be saved: its {', '.join(absent)} is missing (e.g. "
                "transformers builds the LLaVA-OneVision video processor only when torchvision is installed); the "
                "processor still runs, pipelines included (pipeline(..., model=model, processor=processor))")
        self.host.save_pretrained(path, **kwargs)
        info = {"host_processor_class": type(self.host).__name__, "tower": self.tower_config.to_dict()}
        (path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        proc_cfg = path / PROCESSOR_NAME
        data = json.loads(proc_cfg.read_text()) if proc_cfg.is_file() else {}
        data["processor_class"] = type(self).__name__  # so AutoProcessor resolves to this class
        proc_cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return [str(proc_cfg), str(path / PROCESSOR_CONFIG_NAME)]

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        codec: CoTAMELIC | str | os.PathLike | None = "auto",
        use_guidance: bool = True,
        **kwargs: Any,
    ) -> "CoTAMProcessor":
        """Load a processor saved by :meth:`save_pretrained` (a CoTAM model folder or hub id).

        Args:
            codec: "auto" loads the folder's ``codec/`` when present (needed only to encode images);
                None skips it; or a codec / codec folder.
            **kwargs: hub options (``cache_dir``, ``revision``, ``token``, ``local_files_only``, ``subfolder``...) and
                overrides for the host processor; ``AutoProcessor``'s own keywords are accepted.

        Raises:
            CheckpointError: the folder was not saved by a CoTAMProcessor, or names an unknown host processor class.
        """
        import transformers
        from transformers.utils import cached_file

        from .._transformers import quiet_transformers

        for key in _AUTO_KWARGS:
            kwargs.pop(key, None)
        hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        source = str(pretrained_model_name_or_path)
        subfolder = hub.pop("subfolder", None) or ""

        def fetch(name: str) -> str | None:
            return cached_file(source, name, subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **hub)

        info_file = fetch(PROCESSOR_CONFIG_NAME)
        if info_file is None:
            raise CheckpointError(f"{source} has no {PROCESSOR_CONFIG_NAME}: it was not saved by CoTAMProcessor")
        info = json.loads(Path(info_file).read_text())
        host_cls = getattr(transformers, info.get("host_processor_class", ""), None)
        if host_cls is None:
            raise CheckpointError(f"unknown host processor class {info.get('host_processor_class')!r} in {info_file}")
        with quiet_transformers():
            host = host_cls.from_pretrained(source, subfolder=subfolder, **hub, **kwargs)
        tower = CoTAMTowerConfig.from_dict(info["tower"])
        codec_model: Any
        if codec == "auto":
            codec_config = fetch(f"{CODEC_SUBFOLDER}/config.json")
            codec_model = None
            if codec_config is not None:
                if model_type_of(Path(codec_config).parent) != STANDARD_MODEL_TYPE:  # a standard base has no weights
                    fetch(f"{CODEC_SUBFOLDER}/model.safetensors")  # beside its config (a hub download)
                codec_model = load_codec(Path(codec_config).parent)
        elif codec is None or isinstance(codec, CoTAMELIC) or is_standard_codec(codec):
            codec_model = codec
        else:
            codec_model = load_codec(codec)
        return cls(host, tower, codec_model, use_guidance)
