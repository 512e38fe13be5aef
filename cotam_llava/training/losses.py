"""Rate–distortion loss of the variable-rate codec (CoTAM appendix A.3, Eq. 3).

The paper's per-level objective is L = D + λ_q·R (D: MSE of [0, 1] images, R: bits
per pixel). With a quality per position, each pixel has its own λ; we minimise

    L = mean_pixels( MSE_pixel / λ_pixel ) + R_bpp

which for a uniform level is (D + λ_q·R)/λ_q — the same minimiser per sample — but
keeps the loss of every level on a comparable scale (in bits) when a batch mixes levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..codec.model import CodecOutput

__all__ = ["RDLossOutput", "rate_distortion_loss", "MultiLevelLossOutput", "multi_level_loss", "lambda_weighted_rate"]


@dataclass
class RDLossOutput:
    """Scalars of one batch: ``loss`` (differentiable), ``mse``, ``bpp``, ``psnr``."""

    loss: Tensor
    mse: Tensor
    bpp: Tensor
    psnr: float


def rate_distortion_loss(output: CodecOutput, x: Tensor, lambdas: Tensor, qmap: Tensor) -> RDLossOutput:
    """Loss of a training batch.

    Args:
        output: the codec's forward output for ``x``.
        x: originals (B, 3, H, W) in [0, 1].
        lambdas: λ per quality index, (Q,) — i.e. ``lambdas[q]`` is the λ of quality q.
        qmap: quality map (B, H/16, W/16), long.
    """
    B, _, H, W = x.shape
    pixels = B * H * W
    bits = sum(-(lk.clamp_min(1e-9).log2()).sum() for lk in output.likelihoods.values())
    bpp = bits / pixels
    mse_map = (output.x_hat - x).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    lam = lambdas.to(x.device)[qmap].unsqueeze(1).float()  # (B, 1, h, w)
    lam = F.interpolate(lam, size=(H, W), mode="nearest")
    loss = (mse_map / lam).mean() + bpp
    mse = mse_map.mean().detach()
    psnr = 10 * math.log10(1.0 / max(float(mse), 1e-12))
    return RDLossOutput(loss=loss, mse=mse, bpp=bpp.detach(), psnr=psnr)


@dataclass
class MultiLevelLossOutput:
    """Scalars of one adapter batch: ``loss`` (differentiable), ``low`` and ``high`` (MSEs, detached)."""

    loss: Tensor
    low: Tensor
    high: Tensor


def multi_level_loss(
    embeddings: Tensor,
    final: Tensor,
    target_embeddings: Tensor,
    target_final: Tensor,
    lambda_low: float,
    lambda_high: float,
    base_embeddings: Tensor | None = None,
    base_final: Tensor | None = None,
    relative_power: float = 1.0,
) -> MultiLevelLossOutput:
    """CoTAM's adapter loss (§3.3): λ_low·MSE(patch-embedding tokens) + λ_high·MSE(final-layer tokens).

    With ``base_embeddings`` and ``base_final`` (the tokens of x̂ without the adapter) each sample's two MSEs are
    divided by its own base MSEs (our option, ``--relative_loss``): every quality level then weighs by the share
    of its error the adapter removes or adds, instead of the low levels' large absolute errors drowning the
    high levels' small ones.

    Args:
        embeddings: enhanced embedding output of x̂ (+ adapter), (B, T, D).
        final: final-layer tokens of x̂ (+ adapter), (B, T, D).
        target_embeddings, target_final: the same for the original image (no grad).
        lambda_low, lambda_high: the weights (paper: 0.1 and 1; λ_high = 0 during warm-up).
        base_embeddings, base_final: the same for x̂ without the adapter (no grad), or None.
        relative_power: with the base tokens, each MSE is divided by its base MSE to this power (1: the share of the
            error; 0: the paper's absolute MSE; in between, a base codec whose levels' errors span a wide range —
            hevc's ≈ 100× against elic-small's ≈ 10× — weighs its near-lossless levels less than 1 would).

    Returns:
        ``loss`` and the batch's absolute MSEs ``low``, ``high`` (detached, also in relative mode).
    """
    def per_sample_mse(a: Tensor, b: Tensor) -> Tensor:  # (B,)
        return (a - b).pow(2).flatten(1).mean(1)

    low_i, high_i = per_sample_mse(embeddings, target_embeddings), per_sample_mse(final, target_final)
    low, high = low_i.mean(), high_i.mean()
    if base_embeddings is not None and base_final is not None:
        low_i = low_i / per_sample_mse(base_embeddings, target_embeddings).clamp_min(1e-12).pow(relative_power)
        high_i = high_i / per_sample_mse(base_final, target_final).clamp_min(1e-12).pow(relative_power)
    loss = (lambda_low * low_i + lambda_high * high_i).mean()
    return MultiLevelLossOutput(loss=loss, low=low.detach(), high=high.detach())


def lambda_weighted_rate(likelihoods: dict[str, Tensor], lam: Tensor, pixels: int) -> tuple[Tensor, Tensor]:
    """The rate term of the fine-tuning variant, L = D + λ_q·R, with λ per latent position.

    Each likelihood tensor's bits are summed over channels and weighted by λ at their position (the λ map is
    area-averaged onto z's coarser grid), then divided by the pixel count.

    Args:
        likelihoods: ``{"y": (B, M, h, w), "z": (B, C_z, h/4, w/4)}`` from the codec's forward.
        lam: λ of every latent position, (B, h, w).
        pixels: B·H·W of the coded images.

    Returns:
        (Σ λ·bits / pixels, differentiable; bpp, detached).
    """
    weighted = lam.new_zeros(())
    bits_total = lam.new_zeros(())
    for lk in likelihoods.values():
        bits = -(lk.clamp_min(1e-9).log2()).sum(dim=1)  # (B, h', w')
        lam_here = F.adaptive_avg_pool2d(lam[:, None].float(), bits.shape[-2:])[:, 0]
        weighted = weighted + (lam_here * bits).sum()
        bits_total = bits_total + bits.sum()
    return weighted / pixels, (bits_total / pixels).detach()
