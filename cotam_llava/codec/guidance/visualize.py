"""Figure of what guidance does to an image (like CoTAM's Fig. 16).

Three panels over the image: the continuous shallow-attention map, its quantized levels
(decrease / keep / increase), and the bits the codec actually spends per region
(−log2 of its likelihoods per latent position, ŷ plus the share of ẑ, in bits per pixel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...imageio import ImageLike, to_uint8_array

__all__ = ["bits_per_position", "guidance_figure"]


def bits_per_position(likelihoods: dict[str, Tensor], latent_hw: tuple[int, int]) -> np.ndarray:
    """Estimated bits per pixel at each latent position, (h, w).

    ŷ's bits are summed over channels at each position; ẑ's bits (one position per 4×4
    latent block) are shared equally by the 16 positions below them. Divided by the 256
    pixels a latent position covers.
    """
    h, w = latent_hw
    y_bits = -(likelihoods["y"].clamp_min(1e-9).log2()).sum(dim=1)[0]  # (h, w)
    z_bits = -(likelihoods["z"].clamp_min(1e-9).log2()).sum(dim=1, keepdim=True)  # (1, 1, h/4, w/4)
    z_share = F.interpolate(z_bits / 16.0, size=(h, w), mode="nearest")[0, 0]
    return ((y_bits + z_share) / 256.0).cpu().numpy()


def guidance_figure(
    image: ImageLike,
    importance: Tensor,
    quality_grid: np.ndarray,
    bpp_map: np.ndarray,
    out_path: str | Path,
    title: str = "",
    rate_title: str | None = None,
    importance_title: str = "shallow attention (continuous)",
) -> Path:
    """Write the three-panel PNG.

    Args:
        image: the original image.
        importance: continuous map (gh, gw).
        quality_grid: quality level per cell (gh', gw').
        bpp_map: bits per pixel per latent position (h, w), e.g. from :func:`bits_per_position` — or, with
            ``rate_title``, another per-block rate measure (a standard codec's QP per block).
        rate_title: the third panel's title (default: the bits per region and their mean).
        importance_title: the first panel's title (what ``importance`` is).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = to_uint8_array(image)
    H, W = img.shape[:2]

    def up(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.as_tensor(np.asarray(a, dtype=np.float32))[None, None]
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(t, size=(H, W), mode=mode, **kwargs)[0, 0].numpy()

    fig = Figure(figsize=(15, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    panels = [
        (importance_title, up(importance.cpu().numpy(), "bilinear"), "inferno", None),
        ("quality level per region", up(quality_grid, "nearest"), "RdYlGn", None),
        (rate_title or f"codec bits per region (bpp; mean {bpp_map.mean():.3f})", up(bpp_map, "nearest"), "viridis", None),
    ]
    for i, (name, overlay, cmap, _) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(img)
        shown = ax.imshow(overlay, cmap=cmap, alpha=0.55)
        fig.colorbar(shown, ax=ax, fraction=0.035, pad=0.02)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path
