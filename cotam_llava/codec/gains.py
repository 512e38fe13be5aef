"""Learned per-quality gain vectors (variable rate with spatially adaptive quality).

Cui et al., "Asymmetric Gained Deep Image Compression With Continuous Rate
Adaptation", CVPR 2021; DCVC-RT's per-quality feature scales; CoTAM appendix A.3,
Eq. (2): ``f'_l = f_l ⊙ g_{l,q}``.

Each :class:`QualityGains` holds one vector per quality level for one layer.
A quality can be one level for the whole image or a per-position map on the
latent grid (H/16 × W/16); the map is expanded by nearest-neighbour repetition
to the layer's resolution, so every 16×16 pixel block uses its own level::

    qmap (B, h, w) ──gain[qmap]──▶ (B, C, h, w) ──repeat ×s──▶ (B, C, h·s, w·s) ──⊙ f
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["QualityGains", "initial_latent_gains"]


def initial_latent_gains(lambdas: list[float]) -> Tensor:
    """Initial latent gain per quality index so that an untrained model orders the rates.

    For a uniform quantizer under L = D + λR, the best step Δ satisfies Δ² ∝ λ, so the
    gain (1/Δ) is initialised to ``sqrt(λ_ref / λ_q)`` with λ_ref the geometric mean of
    the table: quality 0 (largest λ) gets the smallest gain, hence the fewest bits.

    Args:
        lambdas: λ table in ascending order (best quality first), length Q.

    Returns:
        Tensor of shape (Q,), indexed by quality (0 = lowest rate), strictly increasing.
    """
    lam = torch.tensor(lambdas, dtype=torch.float64)
    ref = lam.log().mean().exp()
    gains = (ref / lam).sqrt().flip(0)  # quality q uses lambdas[Q - 1 - q]
    return gains.float()


class QualityGains(nn.Module):
    """One learned gain vector per quality level for a C-channel feature map.

    Args:
        num_qualities: Q, the number of levels.
        channels: C, the feature channels.
        init: initial gain per level, shape (Q,) (broadcast over channels); ones if None.
    """

    def __init__(self, num_qualities: int, channels: int, init: Tensor | None = None) -> None:
        super().__init__()
        if init is None:
            init = torch.ones(num_qualities)
        self.gain = nn.Parameter(init.reshape(num_qualities, 1).repeat(1, channels).clone())

    def forward(self, x: Tensor, quality: Tensor) -> Tensor:
        """Scale ``x`` by the gains of ``quality``.

        Args:
            x: features (B, C, H', W') with H' = s·h, W' = s·w for an integer s ≥ 1.
            quality: either (B,) levels, one per image, or a (B, h, w) map on the latent grid.

        Returns:
            Tensor of the shape of ``x``.
        """
        gain = self.gain[quality.long()]  # (B, C) or (B, h, w, C)
        if gain.dim() == 2:
            gain = gain[:, :, None, None]
        else:
            gain = gain.permute(0, 3, 1, 2)
            if gain.shape[-2:] != x.shape[-2:]:
                factor_h, rem_h = divmod(x.shape[-2], gain.shape[-2])
                factor_w, rem_w = divmod(x.shape[-1], gain.shape[-1])
                if rem_h or rem_w or factor_h != factor_w:
                    raise ValueError(
                        f"quality map {tuple(gain.shape[-2:])} does not tile features {tuple(x.shape[-2:])}"
                    )
                gain = F.interpolate(gain, scale_factor=factor_h, mode="nearest")
        return x * gain
