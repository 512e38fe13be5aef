"""A decoded image or frame: the reconstruction on the codec canvas, its latent (learned bases) and quality grid.

Shared by every base codec's decoder (``codec.pipeline`` for the learned codec, ``codec.standard`` for
hevc / av1); importing it needs torch and Pillow, not the codec models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from ..imageio import to_pil
from .container import CodedItem, ResizeMode

__all__ = ["DecodedImage"]


@dataclass
class DecodedImage:
    """One decoded image or frame.

    Attributes:
        x_hat: reconstruction on the codec canvas, (1, 3, Hc, Wc) in [0, 1] — the
            reconstruction prior the vision tower consumes.
        y_hat: quantized latent after the inverse gain, (1, M, Hc/16, Wc/16); None for the standard bases
            (hevc, av1), which have no latent.
        quality: per-position quality levels on the latent grid, (Hc/16, Wc/16) uint8.
        item: the parsed header fields and streams.
    """

    x_hat: Tensor
    y_hat: Tensor | None
    quality: np.ndarray
    item: CodedItem

    @property
    def picture(self) -> Tensor:
        """x̂ as coded, (1, 3, h, w): the original area of a padded canvas, or the whole canvas of a resized
        one (what an MLLM's vision tower consumes; no resampling back to the original size)."""
        if self.item.resize_mode == ResizeMode.PAD:
            w, h = self.item.orig_size
            return self.x_hat[..., :h, :w]
        return self.x_hat

    def to_pil(self) -> Image.Image:
        """The reconstruction at the original size (cropped, or resized back)."""
        w, h = self.item.orig_size
        if self.item.resize_mode == ResizeMode.PAD:
            return to_pil(self.x_hat[..., :h, :w])
        return to_pil(self.x_hat).resize((w, h), Image.BICUBIC)
