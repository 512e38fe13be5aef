"""The edge side for a CoTAM-enabled MLLM: pictures and video frames → ``.cotam`` bytes the tower reads.

::

    image ─(centre square, if the host's processor crops)─▶ picture
          ─guidance (optional): shallow-ViT attention → G×G quality map─┐
          ─codec at the tower's canvas (16 × patch grid; or native, padded, for AnyRes)─▶ bytes
    video ─uniform frame sampling (as video MLLMs do)─▶ frames ─each as above─▶ one container
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from ..codec.guidance import GuidanceConfig, guided_quality_map, load_guidance
from ..codec.model import CoTAMELIC
from ..codec.pipeline import encode
from ..imageio import ImageLike, to_pil
from .tower import CoTAMTowerConfig

__all__ = ["EdgeEncoder", "center_square"]


def center_square(image: Image.Image) -> Image.Image:
    """The centred square a shortest-edge-resize + centre-crop image processor keeps."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


class EdgeEncoder:
    """Encodes what the device sees for a given CoTAM tower configuration.

    Args:
        codec: the finalized codec (the same checkpoint the cloud decodes with).
        config: the tower's :class:`CoTAMTowerConfig` (canvas, crop, default quality, guidance).
        use_guidance: run guidance when the config names a guidance model (False: uniform quality).
    """

    def __init__(self, codec: CoTAMELIC, config: CoTAMTowerConfig, use_guidance: bool = True) -> None:
        self.codec = codec
        self.config = config
        self.use_guidance = use_guidance and config.guidance_model is not None
        self._guidance = None

    @property
    def guidance(self):
        if self._guidance is None and self.use_guidance:
            cfg = GuidanceConfig.from_dict(self.config.guidance) if self.config.guidance else None
            self._guidance = load_guidance(str(self.config.guidance_model), cfg)
        return self._guidance

    def picture(self, image: ImageLike) -> Image.Image:
        pil = to_pil(image)
        return center_square(pil) if self.config.center_crop else pil

    def encode_images(self, images: Sequence[ImageLike], quality: int | None = None, video: bool = False) -> bytes:
        """Encode pictures (or the frames of one video, ``video=True``) into one container."""
        q = self.config.quality if quality is None else quality
        pictures = [self.picture(image) for image in images]
        maps = None
        if self.guidance is not None:
            maps = [
                guided_quality_map(self.guidance, p, q, num_qualities=self.codec.config.num_qualities)[0]
                for p in pictures
            ]
        return encode(self.codec, pictures, quality=q, quality_maps=maps, canvas=self.config.canvas_size, video=video)

    def encode_image(self, image: ImageLike, quality: int | None = None) -> bytes:
        """One picture → one container."""
        return self.encode_images([image], quality)

    def encode_video(self, video: str | Path | Sequence[ImageLike], num_frames: int = 16, quality: int | None = None) -> bytes:
        """A video file (frames sampled uniformly) or a list of frames → one container of video frames."""
        if isinstance(video, (str, Path)):
            from ..codec.video import read_frames

            frames, _ = read_frames(video, num_frames)
        else:
            frames = list(video)
        return self.encode_images(frames, quality, video=True)
