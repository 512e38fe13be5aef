"""``CoTAMProcessor``: chat template + text + bitstreams (or images / videos, encoded on the edge side) → model inputs.

::

    images / videos ─EdgeEncoder (codec, guidance)─▶ .cotam bytes ─┐
    .cotam bytes ─parse headers (sizes, frames)─────────────────────┤
    text ─the host processor, given stand-in pictures of the decoded sizes─▶ input_ids with the host's own
          image-token expansion (AnyRes ``image_sizes`` included); video tokens expanded as the host does
    → BatchFeature(input_ids, attention_mask, pixel_values = packed bytes, [image_sizes, batch_num_images],
                   [pixel_values_videos = packed bytes])

The bitstreams travel as ``uint8`` tensors (:func:`~cotam_llava.vision.tower.pack_bitstreams`) in the slots where
the stock processor puts pixels, so ``model.generate(**inputs)`` works unchanged.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..codec.container import Container, ParseLimits, ResizeMode, parse
from ..codec.model import CoTAMELIC
from ..errors import CheckpointError, ConfigError, ImageInputError
from ..imageio import ImageLike
from ..vision.edge import EdgeEncoder
from ..vision.tower import CoTAMTowerConfig, pack_bitstreams

__all__ = ["CoTAMProcessor", "PROCESSOR_CONFIG_NAME"]

PROCESSOR_CONFIG_NAME = "cotam_processor.json"


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


class CoTAMProcessor:
    """Host processor (tokenizer, chat template, image processor) + CoTAM's edge encoder.

    Args:
        host: the stock processor (``LlavaProcessor``, ``LlavaOnevisionProcessor``, ``InternVLProcessor``).
        tower_config: the model's :class:`CoTAMTowerConfig` (canvas, crop, quality, guidance).
        codec: the codec, needed only to encode images or videos here (bitstreams need none).
        use_guidance: run the configured guidance when encoding.
    """

    def __init__(self, host: Any, tower_config: CoTAMTowerConfig, codec: CoTAMELIC | None = None, use_guidance: bool = True) -> None:
        self.host = host
        self.tower_config = tower_config
        self.edge = EdgeEncoder(codec, tower_config, use_guidance) if codec is not None else None
        self.limits = ParseLimits()

    # ------------------------------------------------------------------ host delegation
    @property
    def tokenizer(self) -> Any:
        return self.host.tokenizer

    @property
    def image_processor(self) -> Any:
        return self.host.image_processor

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
        bitstreams: Sequence[bytes] | None = None,
        images: Sequence[ImageLike] | None = None,
        videos: Sequence[Any] | None = None,
        video_bitstreams: Sequence[bytes] | None = None,
        quality: int | None = None,
        num_frames: int = 16,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> Any:
        """Model inputs for ``text`` with image placeholders filled from bitstreams.

        Args:
            text: prompt(s) containing the host's image (and video) tokens, e.g. from :meth:`apply_chat_template`.
            bitstreams: one ``.cotam`` container per image, in prompt order.
            images: pictures to encode here instead (needs a codec).
            videos, video_bitstreams: video files / frame lists to encode, or containers of frames (LLaVA-OneVision).
            quality: edge quality for ``images`` / ``videos`` (default: the config's).
            num_frames: frames sampled from each video file.
            **kwargs: passed to the host processor (``padding``, ...).

        Returns:
            A ``BatchFeature`` for ``model(**inputs)`` / ``model.generate(**inputs)``.
        """
        if return_tensors != "pt":
            raise ConfigError("CoTAMProcessor returns PyTorch tensors only (return_tensors='pt')")
        streams = list(bitstreams or [])
        if images is not None:
            streams += self.encode_images(images, quality)
        video_streams = list(video_bitstreams or [])
        if videos is not None or video_streams:
            self._require_video()
        if videos is not None:
            video_streams += self.encode_videos(videos, num_frames, quality)
        texts = [text] if isinstance(text, str) else list(text)

        image_containers = [parse(s, self.limits) for s in streams]
        for i, c in enumerate(image_containers):
            if len(c.items) != 1 or c.items[0].is_video_frame:
                raise ImageInputError(f"image bitstream {i} holds {len(c.items)} items; give one container per image "
                                      "and pass videos as video_bitstreams")
        if video_streams:
            token = self.host.video_token
            counts = [len(parse(s, self.limits).items) for s in video_streams]
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
        return features

    # ------------------------------------------------------------------ (de)serialisation
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the host processor (tokenizer, chat template, image processor) and the CoTAM settings."""
        path = Path(save_directory)
        self.host.save_pretrained(path, **kwargs)
        info = {"host_processor_class": type(self.host).__name__, "tower": self.tower_config.to_dict()}
        (path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        proc_cfg = path / "processor_config.json"
        data = json.loads(proc_cfg.read_text()) if proc_cfg.is_file() else {}
        data["processor_class"] = type(self).__name__  # so AutoProcessor resolves to this class
        proc_cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        codec: CoTAMELIC | str | None = "auto",
        use_guidance: bool = True,
        **kwargs: Any,
    ) -> "CoTAMProcessor":
        """Load a processor saved by :meth:`save_pretrained` (a CoTAM model folder).

        Args:
            codec: "auto" loads the folder's ``codec/`` when present (needed only to encode images);
                None skips it; or a codec / codec folder.
        """
        import transformers

        from .._transformers import quiet_transformers
        from .modeling_cotam import CODEC_SUBFOLDER

        path = Path(pretrained_model_name_or_path)
        info_file = path / PROCESSOR_CONFIG_NAME
        if not info_file.is_file():
            raise CheckpointError(f"{path} has no {PROCESSOR_CONFIG_NAME}: it was not saved by CoTAMProcessor")
        info = json.loads(info_file.read_text())
        host_cls = getattr(transformers, info.get("host_processor_class", ""), None)
        if host_cls is None:
            raise CheckpointError(f"unknown host processor class {info.get('host_processor_class')!r} in {info_file}")
        kwargs.pop("trust_remote_code", None)
        with quiet_transformers():
            host = host_cls.from_pretrained(path, **kwargs)
        tower = CoTAMTowerConfig.from_dict(info["tower"])
        codec_model: CoTAMELIC | None
        if codec == "auto":
            codec_model = CoTAMELIC.from_pretrained(path / CODEC_SUBFOLDER) if (path / CODEC_SUBFOLDER / "config.json").is_file() else None
        elif codec is None or isinstance(codec, CoTAMELIC):
            codec_model = codec
        else:
            codec_model = CoTAMELIC.from_pretrained(codec)
        return cls(host, tower, codec_model, use_guidance)
