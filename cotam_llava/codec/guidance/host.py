"""Host guidance: rate-matched quality maps from the host vision encoder's own final tokens.

Shallow attention barely predicts where bits pay (``eval/guidance_anatomy.py``: Spearman ρ ≈ 0 between a cell's
attention and the token error one more level there removes per bit). When the edge device holds the MLLM's whole
vision encoder, it can ask it directly::

    picture ─codec eval pass at q − s … q + s─▶ per cell: bits, reconstruction
            ─host: final-token error with only cell c at level l (the rest at q), batched─▶ d[l, c]
            ─rate-constrained allocation (allocation.allocate): Σ bits ≤ the uniform file's─▶ map
            ─real file; while it is larger than the uniform file, shrink the budget by the excess─▶ QualityMap
            ─(verify) ``candidates`` such maps, fewer cells changed in each, decoded for real and judged by the host
             beside the uniform file─▶ the map of least real error, or none

The map never makes the file larger than the uniform one by more than ``GuidanceConfig.rate_tolerance``; where
no map fits, or (``verify``) none beats the uniform file on the host's own error, the picture is coded uniformly:
the sum of 2s·G² single-cell errors is only a model of the map's error, wrong in sign for about one map in five
on photos nobody tuned on. Costs per picture: 2s + 1 codec passes, 2s·G² + 2 host passes (in batches of 32) and up
to ``rate_rounds`` + 1 real encodes per candidate, plus (verify) one decode per candidate and the uniform file and
one host pass over them.

Over a standard base with per-region quality (hevc) there is no eval pass to read bits from: each cell's bits and
picture at the other levels come from real encodes with only that cell moved (:func:`~.allocation.probe_standard`,
2s·G² + 2s + 1 x265 encodes, ≈ 6 s per 256² picture on this CPU), and the host judges the real decoded pictures.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...encoders import family_of, pair
from ...errors import ConfigError
from ..loading import is_standard_codec
from ..quality_map import QualityMap
from .allocation import CodedPicture, host_distortion, rate_matched_map
from .configuration import GuidanceConfig

__all__ = ["HostGuidance"]


class HostGuidance(nn.Module):
    """Quality maps chosen by the host encoder's final-token error under the base level's rate.

    Args:
        encoder: the host's whole vision model (CLIP, SigLIP, InternViT, DINOv2 from transformers), frozen.
        config: ``allocation="host"``; ``grid``, ``spread``, ``rate_tolerance``, ``rate_rounds``, normalisation
            and ``image_size`` as for shallow attention.
        tower: the cloud's CoTAM tower (its encoder is ``encoder``): the error is then that of the tokens the cloud
            will make — x̂ through the encoder plus the adapter's enhancement from ŷ and the levels — instead of the
            stock encoder's on x̂ alone. The edge then holds the adapter too (2 M parameters for DINOv2-S).
    """

    def __init__(self, encoder: nn.Module, config: GuidanceConfig | None = None, tower: nn.Module | None = None) -> None:
        super().__init__()
        self._tower = [tower] if tower is not None else []  # not a submodule: the tower owns the encoder
        self.config = config or GuidanceConfig(allocation="host")
        if self.config.allocation != "host":
            raise ConfigError(f"HostGuidance makes allocation='host' maps, the config says {self.config.allocation!r}")
        family = family_of(encoder)
        self.encoder = encoder.eval().requires_grad_(False)
        mean, std = self.config.image_mean or family.image_mean, self.config.image_std or family.image_std
        device = next(encoder.parameters()).device
        self.register_buffer("image_mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
        self.input_size = (self.config.image_size,) * 2 if self.config.image_size else pair(encoder.config.image_size)

    def tokens(self, x: Tensor) -> Tensor:
        """Final tokens (B, T, D) of pictures (B, 3, H, W) in [0, 1] (antialiased bicubic resize to the input)."""
        x = x.to(self.image_mean.device, torch.float32)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True, align_corners=False)
        dtype = next(self.encoder.parameters()).dtype
        pixels = ((x.clamp(0, 1) - self.image_mean) / self.image_std).to(dtype)
        return self.encoder(pixel_values=pixels).last_hidden_state.float()

    def token_error(self, reference: Tensor):
        """(B, 3, H, W) → (B,) mean over tokens of 1 − cos against ``reference`` (1, T, D)."""
        def error(x: Tensor) -> Tensor:
            tokens = self.tokens(x)
            return 1 - F.cosine_similarity(tokens.double(), reference.to(tokens.device).double(), dim=-1).mean(dim=-1).cpu()
        return error

    def cloud_error(self, x: Tensor):
        """(x̂, ŷ, levels) batches → (B,) mean 1 − cos of the tower's tokens against those of the original ``x``."""
        tower = self._tower[0]
        with torch.no_grad():
            reference = tower.encode_images(x.to(tower.device), compress=False).last_hidden_state.double()

        def error(x_hat: Tensor, y_hat: Tensor, levels: Tensor) -> Tensor:
            coded = (x_hat.to(tower.device), y_hat.to(tower.device))
            tokens = tower.encode_images(x_hat, levels.to(tower.device), coded=coded).last_hidden_state.double()
            return 1 - F.cosine_similarity(tokens, reference, dim=-1).mean(dim=-1).cpu()
        return error

    @staticmethod
    def judge(error, coded: bool = False):
        """Decoded real files (:class:`~.allocation.CodedPicture`) → (N,) ``error`` of each, in one batch."""
        def judge(files: list[CodedPicture]) -> np.ndarray:
            x_hat = torch.stack([f.x_hat for f in files])
            with torch.no_grad():
                if coded:
                    return error(x_hat, torch.stack([f.y_hat for f in files]), torch.stack([f.levels for f in files])).numpy()
                return error(x_hat).numpy()
        return judge

    def quality_map(self, codec, x: Tensor, base_quality: int) -> tuple[QualityMap | None, Tensor]:
        """(map, or None for a uniform file; (G, G) token error one level up removes in each cell) of the
        canvas picture ``x`` (1, 3, H, W) in [0, 1], for a learned ``codec`` or a standard one with per-region
        quality (hevc: each cell's bits and picture from real encodes, :func:`~.allocation.probe_standard`)."""
        if self._tower:
            if is_standard_codec(codec):
                raise ConfigError("host guidance judged by the cloud's tokens (adapter included) needs a learned codec; "
                                  "over a standard base the host's own tokens judge the map")
            error, coded = self.cloud_error(x), True
        else:
            with torch.no_grad():
                error, coded = self.token_error(self.tokens(x)), False
        qmap, probe, d = rate_matched_map(codec, x, base_quality, self.config,
                                          lambda p, b: host_distortion(p, b, error, coded=coded),
                                          judge=self.judge(error, coded) if self.config.verify else None)
        base = probe.levels.index(base_quality)
        up = min(base + 1, len(probe.levels) - 1)
        return qmap, torch.from_numpy(np.maximum(d[base] - d[up], 0.0).reshape(probe.grid))
