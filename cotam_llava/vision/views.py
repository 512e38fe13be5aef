"""Where each encoder input ("view") of a host MLLM comes from in the decoded picture, and ŷ's share of it.

A host's image processor turns one picture into one or more square views: CLIP resizes the shortest
edge and centre-crops; SigLIP and InternViT resize to a square; LLaVA-OneVision's AnyRes adds a resized
global view and the tiles of an aspect-preserving resize, padded to the best grid resolution. The
decoded pixels x̂ go through the host's own image processor (exactly what the stock model would see);
this module computes the same geometry as boxes in picture coordinates, so that the decoded latent ŷ
can be cut the same way and resampled onto the encoder's patch grid::

    picture (w × h px) ─host geometry─▶ boxes [(x0, y0, x1, y1), ...] (px, may reach into padding)
    ŷ (M, Hc/16, Wc/16) ─sample each box on a gh × gw grid (area-averaged)─▶ (n_views, M, gh, gw)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["Box", "full_box", "view_boxes", "sample_latent", "view_side", "LATENT_STRIDE"]

#: pixels per ŷ position (ELIC's analysis transform downsamples by 16).
LATENT_STRIDE = 16


@dataclass(frozen=True)
class Box:
    """An axis-aligned region of the picture, in pixels; may extend beyond it (zero padding)."""

    x0: float
    y0: float
    x1: float
    y1: float


def full_box(width: int, height: int) -> Box:
    """The whole picture."""
    return Box(0.0, 0.0, float(width), float(height))


def _get(processor: Any, name: str) -> Any:
    value = getattr(processor, name, None)
    if value is not None and not isinstance(value, (int, float, str, bool, list, tuple)):
        value = dict(value.items()) if hasattr(value, "items") else vars(value)  # SizeDict
    return value


def _square_side(size: Any) -> tuple[int, int] | None:
    if not size:
        return None
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    return None


def view_side(processor: Any) -> int | None:
    """Side of the square views a host image processor (object or ``to_dict()``) feeds the encoder, if fixed.

    This, not the encoder config's ``image_size``, is the encoder's real input (e.g. DINOv2's config says 518,
    its processors make 224).
    """
    get = (lambda k: processor.get(k)) if isinstance(processor, dict) else (lambda k: _get(processor, k))
    crop, size = get("crop_size"), get("size") or {}
    if get("do_center_crop") and crop and crop.get("height"):
        return int(crop["height"])
    if size.get("height") and size.get("width") and int(size["height"]) == int(size["width"]):
        return int(size["height"])
    if size.get("shortest_edge") and get("do_center_crop") is not False and crop and crop.get("height"):
        return int(crop["height"])
    return None


def _resize_and_crop_box(processor: Any, width: int, height: int) -> Box:
    """The box of one plain view: optional resize, then optional centre crop (transformers' arithmetic)."""
    w, h = float(width), float(height)
    size = _get(processor, "size") or {}
    if _get(processor, "do_resize") is False or not size:
        rw, rh = w, h
    elif _square_side(size):
        rh, rw = _square_side(size)
    elif size.get("shortest_edge"):
        s = int(size["shortest_edge"])
        short, long = min(w, h), max(w, h)
        new_long = int(s * long / short)
        rw, rh = (s, new_long) if w <= h else (new_long, s)
    else:
        raise ConfigError(f"unsupported image processor size {size}")
    box = Box(0.0, 0.0, w, h)
    crop = _get(processor, "crop_size")
    if _get(processor, "do_center_crop") and crop:
        ch, cw = int(crop["height"]), int(crop["width"])
        top, left = (rh - ch) // 2, (rw - cw) // 2
        sx, sy = w / rw, h / rh
        box = Box(left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
    return box


def _anyres_boxes(processor: Any, width: int, height: int) -> list[Box]:
    """LLaVA-OneVision AnyRes: [global view] + tiles of the best-resolution grid, row-major."""
    from transformers.image_processing_utils import select_best_resolution

    size = _get(processor, "size") or {}
    crop = _get(processor, "crop_size")
    tile = int((crop or {}).get("height") or size.get("height") or size.get("shortest_edge"))
    bh, bw = select_best_resolution((height, width), _get(processor, "image_grid_pinpoints"))
    # transformers.image_processing_utils.get_patch_output_size
    scale_w, scale_h = bw / width, bh / height
    if scale_w < scale_h:
        new_w, new_h = bw, min(math.ceil(height * scale_w), bh)
    else:
        new_h, new_w = bh, min(math.ceil(width * scale_h), bw)
    pad_x, pad_y = (bw - new_w) // 2, (bh - new_h) // 2
    sx, sy = width / new_w, height / new_h
    boxes = [full_box(width, height)]
    for top in range(0, bh, tile):
        for left in range(0, bw, tile):
            boxes.append(Box((left - pad_x) * sx, (top - pad_y) * sy, (left + tile - pad_x) * sx, (top + tile - pad_y) * sy))
    return boxes


def view_boxes(processor: Any, width: int, height: int, anyres: bool = True) -> list[Box]:
    """Boxes of the views a host image processor makes from a ``width`` × ``height`` picture, in its order.

    Args:
        processor: the host's image processor (CLIP, SigLIP, GotOcr2/InternVL, LLaVA-OneVision, ...).
        width, height: picture size in pixels.
        anyres: for processors with ``image_grid_pinpoints``, whether the picture is tiled (LLaVA-OneVision
            tiles single-image samples; several images per sample are padded to a square instead).
    """
    if _get(processor, "image_grid_pinpoints"):
        if anyres:
            return _anyres_boxes(processor, width, height)
        side = max(width, height)
        return [Box((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)]
    if _get(processor, "crop_to_patches"):
        raise ConfigError("CoTAM does not support InternVL's crop_to_patches tiling yet; set crop_to_patches=False")
    return [_resize_and_crop_box(processor, width, height)]


def sample_latent(y_hat: Tensor, boxes: list[Box], grid: tuple[int, int]) -> Tensor:
    """Cut ``boxes`` (picture pixels) out of ŷ and resample each onto the encoder's patch grid.

    Sampling is bilinear at the centres of a k-times finer grid, then averaged over k×k cells, so a box
    much larger than the grid is area-averaged rather than aliased; a box that maps 1:1 onto the grid
    (CoTAM's default canvas) returns ŷ's values unchanged. Regions outside ŷ read as zero.

    Args:
        y_hat: (1, M, hl, wl) latent whose position (i, j) covers pixels [16j, 16j+16) × [16i, 16i+16).
        boxes: views in picture pixels.
        grid: (gh, gw) output grid.

    Returns:
        (len(boxes), M, gh, gw).
    """
    _, m, hl, wl = y_hat.shape
    gh, gw = grid
    out = []
    for box in boxes:
        bw_lat = (box.x1 - box.x0) / LATENT_STRIDE
        bh_lat = (box.y1 - box.y0) / LATENT_STRIDE
        k = max(1, math.ceil(max(bw_lat / gw, bh_lat / gh) - 1e-6))
        xs = box.x0 / LATENT_STRIDE + (torch.arange(gw * k, dtype=torch.float64) + 0.5) * bw_lat / (gw * k)
        ys = box.y0 / LATENT_STRIDE + (torch.arange(gh * k, dtype=torch.float64) + 0.5) * bh_lat / (gh * k)
        # grid_sample with align_corners=False: normalised u = 2·x/wl − 1 where x is in latent units
        u = (2 * xs / wl - 1).to(y_hat.dtype)
        v = (2 * ys / hl - 1).to(y_hat.dtype)
        sample_grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], dim=-1).unsqueeze(0).to(y_hat.device)
        view = F.grid_sample(y_hat, sample_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(F.avg_pool2d(view, k) if k > 1 else view)
    return torch.cat(out, dim=0) if out else y_hat.new_zeros(0, m, gh, gw)
