"""CoTAM's second learned base codec: DCAE with per-quality gains and a per-position quality map.

DCAE: Lu et al., "Learned Image Compression with Dictionary-based Entropy Model", CVPR 2025 (the
authors' code: LabShuHangGU/DCAE, on CompressAI). Written here from the paper's architecture with
CompressAI's entropy models and rANS, window attention in plain PyTorch (no timm). The ``dcae``
preset has the authors' sizes (head_dim [8, 16, 32, 32, 16, 8], N=192, M=320, 5 slices, a dictionary
of 128 entries × 640); the variable rate is the same as :class:`~cotam_llava.codec.model.CoTAMELIC`'s
(Cui et al. 2021 / DCVC-RT gain vectors, CoTAM appendix A.3), and so are the quality maps,
``finalize()``, the codec id, the checkpoint format and every error.

Data flow (q: one level per image, or an (h, w) map on the latent grid; Swin = W-MSA/SW-MSA blocks with
ConvGLU feed-forwards, then a 3×3 convolution, around a residual)::

    x (B,3,H,W) ─conv↓2·RB─Swin─⊙g¹_q─conv↓2·RB─Swin─⊙g²_q─conv↓2·RB─Swin─⊙g³_q─conv↓2─▶ y (B,M,H/16,W/16)
    y ⊙ g^y_q = y' ──h_a─▶ z ─Q/EB─▶ ẑ ─h_s^σ, h_s^μ─▶ (σ-prior, μ-prior) (B,M,h,w) each
    for slice s = 1..S of y' (M/S channels, coded in order):
        query  = [σ-prior, μ-prior, ŷ'_1 … ŷ'_{s-1}]
        dict_s = cross-attention(query → learned dictionary D (K entries))      ← the dictionary-based entropy model
        μ_s, σ_s = g_μ([query, dict_s]), g_σ([query, dict_s]);   ŷ'_s = round(y'_s − μ_s) + μ_s   (rANS, GC(μ_s, σ_s))
        ŷ'_s += ½·tanh(g_lrp([query, dict_s, ŷ'_s]))                              ← latent residual prediction
    ŷ' ─⊙g^ŷ_q─▶ ŷ ─deconv↑2─Swin─⊙h¹_q─RB·deconv↑2─Swin─⊙h²_q─RB·deconv↑2─Swin─⊙h³_q─RB·deconv↑2─▶ x̂

``y_hat`` in every output is ŷ (after the inverse gain, what g_s and the CoTAM adapter consume); the entropy-coded
symbols live in the gained domain y'. Image height and width must be multiples of 64 (z is at 1/64). Streams: one
per slice, then z.

:class:`CoTAMDCAE` subclasses :class:`CoTAMELIC`, from which it takes the variable-rate machinery (gains, quality
tensors, ``compress`` / ``decompress`` with the symbol checksum and the bounds-checked rANS decoder, codec id,
``save_pretrained`` / ``from_pretrained``); it replaces the transforms and the latent codec. Everything typed on
``CoTAMELIC`` (pipeline, container, tower, trainers, benchmarks) therefore takes a DCAE checkpoint unchanged, and
``CoTAMELIC.from_pretrained`` dispatches on the checkpoint's ``model_type``.
"""

from __future__ import annotations

from .._compressai import compressai  # noqa: F401  (import order: the shim first)
from compressai.models.base import CompressionModel

from ..errors import ConfigError
from .dcae_configuration import CoTAMDCAEConfig
from .dcae_layers import DictionaryLatentCodec, WindowAttention, build_dcae_modules
from .model import CoTAMELIC

__all__ = ["CoTAMDCAE", "DictionaryLatentCodec", "WindowAttention", "build_dcae_modules"]


class CoTAMDCAE(CoTAMELIC):
    """Variable-rate, spatially adaptive DCAE (see the module docstring for the data flow).

    Args:
        config: the architecture; see :class:`~cotam_llava.codec.dcae_configuration.CoTAMDCAEConfig` and its presets
            (``dcae``, ``dcae-small``, ``dcae-tiny``).
    """

    config_class = CoTAMDCAEConfig
    #: DCAE's entropy model (dictionary cross-attention, LayerNorm, GELU) has no exact fixed-point form here.
    entropy_arithmetic = "float"

    def __init__(self, config: CoTAMDCAEConfig) -> None:
        if not isinstance(config, CoTAMDCAEConfig):
            raise ConfigError(f"CoTAMDCAE needs a CoTAMDCAEConfig, got {type(config).__name__}")
        CompressionModel.__init__(self)
        config.validate()
        self.config = config
        build_dcae_modules(config, into=self)
        self._calibrate_latent_gains()

    def set_rate_quantizer(self, mode: str) -> None:
        """Training rate of ŷ: ``"noise"`` (additive uniform noise) or ``"ste"`` (the STE-rounded latent, as coded)."""
        if mode not in ("noise", "ste"):
            raise ConfigError(f"rate quantizer must be 'noise' or 'ste', got {mode!r}")
        self.latent_codec.rate_on_rounded = mode == "ste"

    def stream_count(self) -> int:
        """Number of rANS streams per image: one per slice, plus z."""
        return self.config.num_slices + 1

    def stream_symbols(self, y_shape: tuple[int, int]) -> list[int]:
        """Symbols in each rANS stream of an image with latent grid ``y_shape``, in stream order."""
        h, w = y_shape
        width = self.config.M // self.config.num_slices
        return [width * h * w] * self.config.num_slices + [self.config.z_channels * (h // 4) * (w // 4)]

    def _latent_decode_shape(self, h: int, w: int) -> tuple[int, int]:
        return (h, w)
