"""Classical baselines through Pillow, behind the same interface as the learned codec.

Every comparison in cotam_llava counts real file bytes: these codecs write the
actual JPEG / WebP / AVIF / JPEG XL file with Pillow and read it back.
JPEG XL needs the optional ``pillow-jxl-plugin`` (``pip install cotam-llava[eval]``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

from ..errors import ConfigError, CoTAMError, ImageInputError

__all__ = ["PillowCodec", "CLASSICAL_FORMATS", "classical_codec"]

#: name → (Pillow format, save options beyond quality, default qualities, Pillow feature to check).
CLASSICAL_FORMATS: dict[str, tuple[str, dict, tuple[int, ...], str | None]] = {
    # 4:2:0 subsampling and optimised Huffman tables: what libjpeg users get by default, bar optimize.
    "jpeg": ("JPEG", {"optimize": True, "subsampling": "4:2:0"}, (10, 20, 30, 50, 70, 85, 95), "jpg"),
    # method=6: WebP's slowest, best-compressing mode.
    "webp": ("WEBP", {"method": 6}, (10, 20, 35, 50, 70, 85, 95), "webp"),
    # speed=6 keeps the benchmark bearable on a CPU; AVIF quality is 0..100 in Pillow.
    "avif": ("AVIF", {"speed": 6, "subsampling": "4:2:0"}, (10, 25, 40, 55, 70, 85), "avif"),
    "jxl": ("JXL", {"effort": 7}, (10, 25, 40, 55, 70, 85, 95), None),
}


@dataclass
class PillowCodec:
    """A classical codec: ``encode`` writes a real file in memory, ``decode`` reads it back.

    Args:
        name: one of :data:`CLASSICAL_FORMATS` (jpeg, webp, avif, jxl).
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in CLASSICAL_FORMATS:
            raise ConfigError(f"unknown classical codec {self.name!r}; choose from {', '.join(CLASSICAL_FORMATS)}")
        fmt, _, _, feature = CLASSICAL_FORMATS[self.name]
        if self.name == "jxl":
            try:
                import pillow_jxl  # noqa: F401  (registers the JXL plugin)
            except ImportError as exc:
                raise CoTAMError("JPEG XL needs pillow-jxl-plugin: pip install pillow-jxl-plugin==1.3.8") from exc
        elif feature and not features.check(feature):
            raise CoTAMError(f"this Pillow build has no {fmt} support")
        self.format = fmt

    @property
    def default_qualities(self) -> tuple[int, ...]:
        return CLASSICAL_FORMATS[self.name][2]

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Compress a uint8 (H, W, 3) image at ``quality`` (0..100) into the codec's file bytes."""
        if not 0 <= quality <= 100:
            raise ConfigError(f"{self.name} quality must be in [0, 100], got {quality}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=self.format, quality=int(quality), **CLASSICAL_FORMATS[self.name][1])
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Read the file bytes back into a uint8 (H, W, 3) image."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"cannot decode {self.name} data: {exc}") from exc


def classical_codec(name: str) -> PillowCodec:
    return PillowCodec(name)
