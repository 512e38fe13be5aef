"""Reading images into the tensors the codecs take, and back.

All codecs in cotam_llava take RGB images as float tensors (1, 3, H, W) in [0, 1]
or uint8 arrays (H, W, 3); this module converts between those, PIL images and files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageInputError

__all__ = ["ImageLike", "load_image", "to_uint8_array", "to_tensor", "to_pil", "psnr", "IMAGE_SUFFIXES", "list_images"]

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Refuse to decode files above this many pixels (Pillow's decompression-bomb guard is a warning).
MAX_IMAGE_PIXELS = 8192 * 8192


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageInputError(f"{path}: {img.width}×{img.height} exceeds {MAX_IMAGE_PIXELS} pixels")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"cannot read image {path}: {exc}") from exc


def image_size(image: ImageLike) -> tuple[int, int]:
    """(width, height) of an image; for a file, read from its header without decoding the pixels."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageInputError(f"image file not found: {path}")
        try:
            with Image.open(path) as img:
                return img.width, img.height
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"cannot read image {path}: {exc}") from exc
    if isinstance(image, Image.Image):
        return image.width, image.height
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    return int(image.shape[-1]), int(image.shape[-2])


def to_uint8_array(image: ImageLike) -> np.ndarray:
    """Any supported image → uint8 array (H, W, 3)."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3:
            raise ImageInputError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}")
        return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ImageInputError(f"expected a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
        return np.array(image[..., :3], dtype=np.uint8, order="C", copy=True)
    raise ImageInputError(f"unsupported image type {type(image).__name__}")


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported image → float tensor (1, 3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        t = image if image.dim() == 4 else image.unsqueeze(0)
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ImageInputError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}")
        return t.float().clamp(0, 1)
    arr = to_uint8_array(image)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageInputError("image is empty")
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_pil(image: ImageLike) -> Image.Image:
    return Image.fromarray(to_uint8_array(image))


def psnr(a: ImageLike, b: ImageLike) -> float:
    """PSNR in dB between two 8-bit RGB images of the same size (inf when identical)."""
    x, y = to_uint8_array(a).astype(np.float64), to_uint8_array(b).astype(np.float64)
    if x.shape != y.shape:
        raise ImageInputError(f"PSNR needs equal sizes, got {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageInputError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files
