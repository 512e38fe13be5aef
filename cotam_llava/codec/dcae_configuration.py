"""Configuration of the variable-rate DCAE codec (``CoTAMDCAEConfig``) and its presets.

Same contract as :mod:`.configuration` (the ELIC config): saved as ``config.json`` beside the
weights, unknown keys and invalid values rejected with :class:`~cotam_llava.errors.ConfigError`
naming the field, and the size of the model a config builds bounded before anything is allocated
(the parameters are counted on PyTorch's ``meta`` device, which allocates no memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .._config import check_bool, check_int, check_int_list, check_str, describe
from ..errors import ConfigError
from .configuration import MAX_CHANNELS, MAX_PARAMETERS, PAPER_LAMBDAS, CodecConfigMixin

__all__ = ["CoTAMDCAEConfig", "DCAE_PRESETS", "DCAE_MODEL_TYPE"]

DCAE_MODEL_TYPE = "cotam-dcae"

#: Bounds on a config from an untrusted checkpoint, beyond the ELIC ones it shares (widths ≤ MAX_CHANNELS,
#: parameters ≤ MAX_PARAMETERS): Swin blocks per stage, window sides, slices, dictionary size and width.
MAX_SWIN_BLOCKS = 16
MAX_WINDOW = 16
MAX_SLICES = 16
MAX_RES_BLOCKS = 8
MAX_DICT_ENTRIES = 1024
MAX_DICT_DIM = 2048
MAX_HEAD_DIM = 256
MAX_MLP_RATIO = 8


#: Parameter counts of the architectures validated so far (canonical JSON → count): a config is validated when it
#: is made and again when a model is built from it.
_PARAMETER_COUNTS: dict[str, int] = {}


@dataclass
class CoTAMDCAEConfig(CodecConfigMixin):
    """Architecture and state of a :class:`~cotam_llava.codec.dcae.CoTAMDCAE` codec.

    Names follow Lu et al., "Learned Image Compression with Dictionary-based Entropy Model" (CVPR 2025),
    and the authors' ``DCAE(head_dim=[8, 16, 32, 32, 16, 8], N=192, M=320, num_slices=5)``.

    Args:
        N: channels of the hyperprior transforms (DCAE: 192).
        M: channels of the latent ŷ (DCAE: 320); ŷ has shape (M, H/16, W/16). A multiple of ``num_slices``.
        z_channels: channels of the hyper-latent z (DCAE: 192), at 1/64 of the image.
        stage_channels: widths of g_a's three Swin stages at 1/2, 1/4, 1/8 (g_s mirrors them; DCAE: 96, 144, 256).
        stage_blocks: Swin blocks (alternately W-MSA and SW-MSA) per stage (DCAE: 1, 2, 12).
        head_dim: channels per attention head of the six Swin stages, g_a's three then g_s's three (DCAE).
        window_size: side of the attention windows of the main transforms (DCAE: 8).
        num_res_blocks: residual bottleneck blocks in every strided / upsampling block (DCAE: 3).
        hyper_blocks: Swin blocks in h_a and in each of the two hyper-synthesis branches (DCAE: 1).
        hyper_head_dim: channels per head of the hyper Swin blocks (DCAE: 32).
        hyper_window_size: their window side (DCAE: 4).
        num_slices: channel slices of ŷ, coded one after the other (DCAE: 5).
        max_support_slices: previous slices each slice's entropy parameters see (DCAE: 5).
        dict_size: entries of the learned dictionary (DCAE: 128).
        dict_heads: heads of the dictionary cross-attention (DCAE: 20).
        dict_head_dim: channels per head; the dictionary is dict_heads·dict_head_dim wide (DCAE: 32 → 640).
        dict_mlp_ratio: hidden width of the cross-attention's ConvGLU, × the dictionary width (DCAE: 4).
        context_hidden: hidden widths of the mean, scale and latent-residual-prediction networks (DCAE: 224, 128).
        num_qualities: quality levels in one model (paper: 10).
        lambdas: λ per level in the paper's order (ascending λ, i.e. descending quality).
        intermediate_gains: also apply gain vectors after each g_a / g_s stage, not only on the latent.
        finalized: the entropy models' CDF tables were built and are saved with the weights.
        preset: name of the preset the config came from (informational).
    """

    N: int = 192
    M: int = 320
    z_channels: int = 192
    stage_channels: list[int] = field(default_factory=lambda: [96, 144, 256])
    stage_blocks: list[int] = field(default_factory=lambda: [1, 2, 12])
    head_dim: list[int] = field(default_factory=lambda: [8, 16, 32, 32, 16, 8])
    window_size: int = 8
    num_res_blocks: int = 3
    hyper_blocks: int = 1
    hyper_head_dim: int = 32
    hyper_window_size: int = 4
    num_slices: int = 5
    max_support_slices: int = 5
    dict_size: int = 128
    dict_heads: int = 20
    dict_head_dim: int = 32
    dict_mlp_ratio: int = 4
    context_hidden: list[int] = field(default_factory=lambda: [224, 128])
    num_qualities: int = 10
    lambdas: list[float] = field(default_factory=lambda: list(PAPER_LAMBDAS))
    intermediate_gains: bool = True
    finalized: bool = False
    preset: str = "custom"
    model_type: str = DCAE_MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("stage_channels", "stage_blocks", "head_dim", "context_hidden", "lambdas"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value has the wrong type, is out of range or
        inconsistent; then bound the parameters the config builds (:data:`MAX_PARAMETERS`)."""
        check_str("model_type", self.model_type, 64)
        if self.model_type != DCAE_MODEL_TYPE:
            raise ConfigError(f"model_type must be {DCAE_MODEL_TYPE!r}, got {describe(self.model_type)}")
        check_str("preset", self.preset, 64)
        for name in ("N", "M", "z_channels"):
            check_int(name, getattr(self, name), 4, MAX_CHANNELS)
        check_int_list("stage_channels", self.stage_channels, (3, 3), 4, MAX_CHANNELS)
        check_int_list("stage_blocks", self.stage_blocks, (3, 3), 0, MAX_SWIN_BLOCKS)
        check_int_list("head_dim", self.head_dim, (6, 6), 1, MAX_HEAD_DIM)
        for name in ("window_size", "hyper_window_size"):
            check_int(name, getattr(self, name), 1, MAX_WINDOW)
        check_int("num_res_blocks", self.num_res_blocks, 0, MAX_RES_BLOCKS)
        check_int("hyper_blocks", self.hyper_blocks, 0, MAX_SWIN_BLOCKS)
        check_int("hyper_head_dim", self.hyper_head_dim, 1, MAX_HEAD_DIM)
        check_int("num_slices", self.num_slices, 1, MAX_SLICES)
        check_int("max_support_slices", self.max_support_slices, 0, self.num_slices)
        check_int("dict_size", self.dict_size, 1, MAX_DICT_ENTRIES)
        check_int("dict_heads", self.dict_heads, 1, 64)
        check_int("dict_head_dim", self.dict_head_dim, 1, MAX_HEAD_DIM)
        check_int("dict_mlp_ratio", self.dict_mlp_ratio, 1, MAX_MLP_RATIO)
        check_int_list("context_hidden", self.context_hidden, (2, 2), 1, MAX_CHANNELS)
        if self.M % self.num_slices:
            raise ConfigError(f"M={self.M} must be a multiple of num_slices={self.num_slices} (equal channel slices)")
        if self.dict_heads * self.dict_head_dim > MAX_DICT_DIM:
            raise ConfigError(f"the dictionary is dict_heads·dict_head_dim = {self.dict_heads * self.dict_head_dim} "
                              f"wide, more than {MAX_DICT_DIM}")
        for i, (width, hd) in enumerate(zip(self.stage_channels + self.stage_channels[::-1], self.head_dim)):
            if width % hd:
                raise ConfigError(f"head_dim[{i}]={hd} must divide the width of its stage ({width} channels)")
        if self.N % self.hyper_head_dim:
            raise ConfigError(f"hyper_head_dim={self.hyper_head_dim} must divide N={self.N}")
        check_int("num_qualities", self.num_qualities, 2, 16)  # 4 bits in the bitstream
        if not isinstance(self.lambdas, list) or len(self.lambdas) != self.num_qualities:
            raise ConfigError(f"lambdas must be a list of {self.num_qualities} numbers, got {describe(self.lambdas)}")
        for i, value in enumerate(self.lambdas):
            if not isinstance(value, float) or not (0 < value and math.isfinite(value)):
                raise ConfigError(f"lambdas[{i}] must be a positive finite float, got {describe(value)}")
        if any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ConfigError("lambdas must be strictly ascending (the paper's order: best quality first)")
        for name in ("intermediate_gains", "finalized"):
            check_bool(name, getattr(self, name))
        count = self.num_parameters()
        if count > MAX_PARAMETERS:
            raise ConfigError(
                f"this config builds {count / 1e6:.0f}M parameters, more than the {MAX_PARAMETERS / 1e6:.0f}M a "
                f"codec may have (M={self.M}, stage_channels={self.stage_channels}, stage_blocks={self.stage_blocks}, "
                f"dictionary {self.dict_size}×{self.dict_heads * self.dict_head_dim}, context_hidden={self.context_hidden})"
            )

    def num_parameters(self) -> int:
        """The exact parameter count of the codec this config builds, counted on the ``meta`` device.

        Building on ``meta`` allocates no tensor memory; the fields are bounded first, so the number of
        modules built is bounded too. Only call it on a config whose fields passed their own checks.
        """
        key = json.dumps({k: v for k, v in self.to_dict().items() if k not in ("finalized", "preset")}, sort_keys=True)
        if key not in _PARAMETER_COUNTS:
            import torch

            from .dcae_layers import build_dcae_modules

            with torch.random.fork_rng(devices=[]), torch.device("meta"):  # some initialisers still draw on the CPU
                modules = build_dcae_modules(self)
            if len(_PARAMETER_COUNTS) > 64:
                _PARAMETER_COUNTS.clear()
            _PARAMETER_COUNTS[key] = sum(p.numel() for p in modules.parameters())
        return _PARAMETER_COUNTS[key]

    @classmethod
    def preset_table(cls) -> dict[str, dict[str, Any]]:
        return DCAE_PRESETS


#: ``dcae`` is the authors' ``DCAE()`` (Lu et al. 2025: head_dim [8, 16, 32, 32, 16, 8], N=192, M=320, five slices,
#: a 128-entry dictionary of 20 heads × 32; 119.4M parameters); ``dcae-small`` (stages 48/64/96 wide with 1/1/2 Swin
#: blocks, one residual block per strided block, M=160 in five slices, a 128-entry dictionary of 4 heads × 16, a
#: 48-wide hyperprior, 32-wide parameter networks; 6.19M parameters, about elic-small's 5.56M) trains on a CPU and
#: stays under 25 MiB with its CDF tables; ``dcae-tiny`` is for tests (0.41M parameters).
DCAE_PRESETS: dict[str, dict[str, Any]] = {
    "dcae": dict(N=192, M=320, z_channels=192, stage_channels=[96, 144, 256], stage_blocks=[1, 2, 12],
                 head_dim=[8, 16, 32, 32, 16, 8], window_size=8, num_res_blocks=3, hyper_blocks=1,
                 hyper_head_dim=32, hyper_window_size=4, num_slices=5, max_support_slices=5, dict_size=128,
                 dict_heads=20, dict_head_dim=32, dict_mlp_ratio=4, context_hidden=[224, 128]),
    "dcae-small": dict(N=48, M=160, z_channels=48, stage_channels=[48, 64, 96], stage_blocks=[1, 1, 2],
                       head_dim=[8, 8, 16, 16, 8, 8], window_size=8, num_res_blocks=1, hyper_blocks=1,
                       hyper_head_dim=16, hyper_window_size=4, num_slices=5, max_support_slices=5, dict_size=128,
                       dict_heads=4, dict_head_dim=16, dict_mlp_ratio=2, context_hidden=[32, 32]),
    "dcae-tiny": dict(N=16, M=32, z_channels=16, stage_channels=[8, 16, 16], stage_blocks=[1, 1, 2],
                      head_dim=[4, 8, 8, 8, 8, 4], window_size=4, num_res_blocks=1, hyper_blocks=1,
                      hyper_head_dim=8, hyper_window_size=2, num_slices=4, max_support_slices=4, dict_size=16,
                      dict_heads=2, dict_head_dim=8, dict_mlp_ratio=2, context_hidden=[16, 16]),
}
