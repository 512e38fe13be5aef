"""The edge side for a CoTAM-enabled MLLM: pictures and video frames → ``.cotam`` bytes the tower reads.

::

    image ─(centre square, if the host's processor crops; shrunk to the AnyRes resolution)─▶ picture
          ─guidance (optional): shallow-ViT attention → G×G quality map (hierarchical for AnyRes tiles)─┐
          ─codec at the tower's canvas (16 × patch grid; or native, padded, for AnyRes)─▶ bytes
    video ─uniform frame sampling (as video MLLMs do)─▶ frames ─each as above─▶ one container
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from ..codec.guidance import GuidanceConfig, HostGuidance, load_guidance
from ..codec.guidance.configuration import judged_options
from ..codec.guidance.attention import ShallowAttentionGuidance
from ..codec.model import CoTAMELIC
from ..codec.pipeline import encode_item, pack
from ..errors import ImageInputError
from ..imageio import ImageLike, to_pil
from .tower_config import CoTAMTowerConfig

if TYPE_CHECKING:
    from .tower import CoTAMVisionTower

__all__ = ["EdgeEncoder", "center_square", "guidance_for"]


def guidance_for(tower: CoTAMVisionTower, allocation: str = "paper", spread: int = 1,
                 cloud: bool = False, candidates: int | None = None) -> ShallowAttentionGuidance | HostGuidance:
    """Guidance from the tower's own encoder, at the tower's input size and normalisation.

    ``allocation="paper"``: shallow attention from a truncated copy (guidance keeps only the first K layers of the
    module it is given). ``"host"``: the whole encoder's final-token error under the base level's rate
    (:class:`~cotam_llava.codec.guidance.HostGuidance`, sharing the tower's frozen encoder; ``spread`` levels either
    side of the base; ``cloud``: judged by the tokens the tower itself makes, adapter included; ``candidates``: maps
    judged on real files, 0 for none — the unjudged rule —, None for ``GuidanceConfig``'s default)."""
    proc = tower.image_processor
    config = GuidanceConfig(image_size=tower.input_side, image_mean=list(proc.image_mean), image_std=list(proc.image_std),
                            allocation=allocation, spread=spread, **judged_options(candidates))
    if allocation == "host":
        return HostGuidance(tower.encoder, config, tower=tower if cloud else None)
    return ShallowAttentionGuidance(copy.deepcopy(tower.encoder), config)


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
        guidance: an already loaded ``ShallowAttentionGuidance`` to use instead of the configured one.
    """

    def __init__(self, codec: CoTAMELIC, config: CoTAMTowerConfig, use_guidance: bool = True, guidance=None) -> None:
        self.codec = codec
        self.config = config
        self.use_guidance = use_guidance and (guidance is not None or config.guidance_model is not None)
        self._guidance = guidance

    @property
    def guidance(self):
        if self._guidance is None and self.use_guidance:
            cfg = GuidanceConfig.from_dict(self.config.guidance) if self.config.guidance else None
            self._guidance = load_guidance(str(self.config.guidance_model), cfg)
        return self._guidance

    def _anyres_grid(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """For AnyRes hosts: (best resolution (h, w), tile grid (rows, cols)) the host will use; else None."""
        proc = self.config.image_processor
        pins = proc.get("image_grid_pinpoints")
        if not pins:
            return None
        from transformers.image_processing_utils import select_best_resolution

        size = proc.get("crop_size") or proc.get("size") or {}
        tile = int(size.get("height") or size.get("shortest_edge"))
        bh, bw = select_best_resolution((height, width), pins)
        return (bh, bw), (bh // tile, bw // tile)

    def picture(self, image: ImageLike, video: bool = False) -> Image.Image:
        """What gets coded: the host's centre square (CLIP-style hosts), or for AnyRes hosts the picture
        shrunk to fit the tiling resolution the host will pick (it would downscale it anyway)."""
        pil = to_pil(image)
        if self.config.center_crop:
            return center_square(pil)
        anyres = None if video else self._anyres_grid(*pil.size)
        if anyres is not None:
            (bh, bw), _ = anyres
            scale = min(bw / pil.width, bh / pil.height)
            if scale < 1:
                pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BICUBIC)
        return pil

    def _tiles(self, picture: Image.Image, video: bool) -> tuple[int, int] | None:
        """The AnyRes tile grid hierarchical guidance uses for ``picture`` (None: one view)."""
        anyres = None if video else self._anyres_grid(*picture.size)
        return anyres[1] if anyres is not None and anyres[1] != (1, 1) else None

    def encode_images(self, images: Sequence[ImageLike], quality: int | None = None, video: bool = False) -> bytes:
        """Encode pictures (or the frames of one video, ``video=True``) into one container.

        With the paper's guidance, AnyRes hosts get hierarchical maps (a global map plus one per host tile, paper
        A.6); host guidance judges the whole picture as the host's global view sees it.
        """
        q = self.config.quality if quality is None else quality
        pictures = [self.picture(image, video) for image in images]
        if not pictures:
            raise ImageInputError("no images to encode")
        guidance = self.guidance
        tiled = guidance is not None and guidance.config.allocation == "paper"  # host maps judge the whole picture
        items = [encode_item(self.codec, p, q, guidance=guidance, tiles=self._tiles(p, video) if tiled else None,
                             canvas=self.config.canvas_size, is_video_frame=video).item for p in pictures]
        return pack(self.codec, items)

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
