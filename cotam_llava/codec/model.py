"""CoTAM's base codec: ELIC with per-quality gains and a per-position quality map.

ELIC: He et al., "ELIC: Efficient Learned Image Compression with Unevenly Grouped
Space-Channel Contextual Adaptive Coding", CVPR 2022 — built from CompressAI's
layers and latent codecs exactly as CompressAI's ``Elic2022Official`` (the
``elic`` preset has the same layers), with widths and depths made configurable.
Variable rate: Cui et al. CVPR 2021 / DCVC-RT gain vectors (CoTAM appendix A.3).

Data flow (q: one level per image, or a (h, w) map on the latent grid)::

    x (B,3,H,W) ─g_a stage1─⊙g¹_q─stage2─⊙g²_q─stage3─⊙g³_q─stage4─▶ y (B,M,H/16,W/16)
    y ⊙ g^y_q = y' ──h_a─▶ z ─Q/EB─▶ ẑ ─h_s─▶ params ─┐
    y' ─(5 uneven channel groups × checkerboard: SCCTX)─▶ ŷ' ─⊙g^ŷ_q─▶ ŷ
    ŷ ─g_s stage1─⊙h¹_q─stage2─⊙h²_q─stage3─⊙h³_q─stage4─▶ x̂

``y_hat`` in every output is ŷ (after the inverse gain, what g_s and the CoTAM
adapter consume); the entropy-coded symbols live in the gained domain y'.
Image height and width must be multiples of 64 (z is at 1/64 resolution).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._compressai import compressai  # noqa: F401  (import order: the shim first)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import (
    ChannelGroupsLatentCodec,
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import AttentionBlock, CheckerboardMaskedConv2d, sequential_channel_ramp
from compressai.models.sensetime import ResidualBottleneckBlock
from compressai.models.base import CompressionModel
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste

from ..errors import CheckpointError, CodecNotFinalizedError, ConfigError, SymbolMismatchError
from .configuration import CONFIG_NAME, WEIGHTS_NAME, CoTAMCodecConfig
from .container import CodecKind
from .exact import ARITHMETICS, check_fixed_point, fixed_point_entropy
from .gains import QualityGains, initial_latent_gains
from .symbols import tap_symbols

__all__ = ["CoTAMELIC", "CodecOutput", "CompressedLatent", "DecompressedLatent", "SIZE_MULTIPLE"]

#: Height and width of codec inputs must be multiples of this (y at /16, z at /64).
SIZE_MULTIPLE = 64


@dataclass
class CodecOutput:
    """Training-time output of :meth:`CoTAMELIC.forward`.

    Attributes:
        x_hat: reconstruction (B, 3, H, W), not clamped.
        y_hat: quantized latent after the inverse gain, (B, M, H/16, W/16).
        likelihoods: ``{"y": (B, M, H/16, W/16), "z": (B, C_z, H/64, W/64)}``.
    """

    x_hat: Tensor
    y_hat: Tensor
    likelihoods: dict[str, Tensor]


@dataclass
class CompressedLatent:
    """Entropy-coded image (one image: batch size 1).

    Attributes:
        strings: rANS streams: one per ŷ group and checkerboard pass, then z.
        y_shape: (h, w) = (H/16, W/16).
        symbol_crc: CRC32 of every coded symbol, in coding order.
        y_hat: the quantized latent the decoder will reconstruct, (1, M, h, w).
        likelihoods: the model's likelihoods of the coded symbols (empty unless ``estimate``).
    """

    strings: list[bytes]
    y_shape: tuple[int, int]
    symbol_crc: int
    y_hat: Tensor
    likelihoods: dict[str, Tensor]


@dataclass
class DecompressedLatent:
    """Output of :meth:`CoTAMELIC.decompress`.

    Attributes:
        x_hat: reconstruction (1, 3, H, W) clamped to [0, 1].
        y_hat: quantized latent after the inverse gain, (1, M, H/16, W/16).
        symbol_crc: CRC32 of the decoded symbols (compare with the encoder's).
    """

    x_hat: Tensor
    y_hat: Tensor
    symbol_crc: int


def _stage(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class _GaussianLatentCodec(GaussianConditionalLatentCodec):
    """CompressAI's ``GaussianConditionalLatentCodec`` (same modules and weights), with an optional training rate
    on STE-rounded latents.

    CompressAI's training forward prices ŷ by the likelihood of y + uniform noise; real coding prices
    round(y − μ) + μ. On a trained elic-small the noise rate is up to twice the real one at the lowest levels
    (docs/training.md). With ``rate_on_rounded`` the training rate is the likelihood of the STE-rounded latent
    itself (gradients pass straight through the rounding), what the bitstream will cost.
    """

    rate_on_rounded: bool = False

    def forward(self, y: Tensor, ctx_params: Tensor) -> dict[str, Any]:
        if not (self.training and self.rate_on_rounded):
            return super().forward(y, ctx_params)
        scales_hat, means_hat = self._chunk(self.entropy_parameters(ctx_params))
        y_hat = quantize_ste(y - means_hat) + means_hat
        gc = self.gaussian_conditional
        likelihoods = gc._likelihood(y_hat, scales_hat, means_hat)
        if gc.use_likelihood_bound:
            likelihoods = gc.likelihood_lower_bound(likelihoods)
        return {"likelihoods": {"y": likelihoods}, "y_hat": y_hat}


class CoTAMELIC(CompressionModel):
    """Variable-rate, spatially adaptive ELIC (see the module docstring for the data flow).

    Args:
        config: the architecture; see :class:`CoTAMCodecConfig` and its presets.
    """

    #: The config class a checkpoint of this codec holds (``CoTAMDCAE`` has its own).
    config_class = CoTAMCodecConfig
    #: How :meth:`compress` computes the entropy parameters: ``"fixed"`` (exact on every device, :mod:`.exact`)
    #: or ``"float"`` (what CompressAI does; detected by the symbol checksum when devices differ). Not part of the
    #: checkpoint or the codec id: a container's kind records it, and :meth:`decompress` follows the container.
    entropy_arithmetic: str = "fixed"

    def __init__(self, config: CoTAMCodecConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        N, M, r, Q = config.N, config.M, config.num_res_blocks, config.num_qualities

        def res(ch: int) -> list[nn.Module]:
            return [ResidualBottleneckBlock(ch, ch) for _ in range(r)]

        def attn(ch: int) -> list[nn.Module]:
            return [AttentionBlock(ch)] if config.attention else []

        # Same layer order as compressai's Elic2022Official, split at each resolution.
        self.g_a = nn.ModuleList([
            _stage(conv(3, N, kernel_size=5, stride=2), *res(N)),
            _stage(conv(N, N, kernel_size=5, stride=2), *res(N), *attn(N)),
            _stage(conv(N, N, kernel_size=5, stride=2), *res(N)),
            _stage(conv(N, M, kernel_size=5, stride=2), *attn(M)),
        ])
        self.g_s = nn.ModuleList([
            _stage(*attn(M), deconv(M, N, kernel_size=5, stride=2), *res(N)),
            _stage(deconv(N, N, kernel_size=5, stride=2), *attn(N), *res(N)),
            _stage(deconv(N, N, kernel_size=5, stride=2), *res(N)),
            _stage(deconv(N, 3, kernel_size=5, stride=2)),
        ])

        latent_init = initial_latent_gains(config.lambdas)
        n_mid = 3 if config.intermediate_gains else 0
        self.gain_a = nn.ModuleList([QualityGains(Q, N) for _ in range(n_mid)])
        self.gain_y = QualityGains(Q, M, init=latent_init)  # y' = y ⊙ g^y_q
        self.gain_y_inv = QualityGains(Q, M, init=1.0 / latent_init)  # ŷ = ŷ' ⊙ g^ŷ_q
        self.gain_s = nn.ModuleList([QualityGains(Q, N) for _ in range(n_mid)])

        self._calibrate_latent_gains()

        # One Gaussian conditional shared by every ŷ group: it holds no parameters, only the
        # scale table and its CDFs, which are identical for all groups; sharing it stores
        # the CDF tables once in a checkpoint instead of once per group (compressai builds
        # one per group, which would cost ~0.8 MiB each).
        self.gaussian_conditional = GaussianConditional(None)
        self.latent_codec = self._build_latent_codec(config, self.gaussian_conditional)
        self._apply_context_masks()

    @torch.no_grad()
    def _calibrate_latent_gains(self, target_std: float = 0.5) -> None:
        """Scale the initial latent gains so that an untrained model orders its rates.

        A freshly initialised g_a shrinks its input (y has a std of about 0.1), so with
        gains near 1 every low-quality symbol rounds to zero and several levels tie at
        the same rate. A fixed noise probe (its own generator: the global RNG is not
        touched) measures the std of y once; the gains are then scaled so that quality 0
        gives y' a std of ``target_std`` and each higher level a larger one (the ratios
        of :func:`initial_latent_gains` are kept). The inverse gains are scaled by the
        reciprocal, so g_s still sees ŷ ≈ y. The factor is rounded to 1/8 octave, so the same preset and
        seed give the same weights (and codec id) whatever the thread count. Loading a checkpoint overwrites all of this. A model built on the
        ``meta`` device (a layout only: names and shapes, no values) is not calibrated.
        """
        if self.gain_y.gain.is_meta:
            return
        probe = torch.rand(1, 3, SIZE_MULTIPLE * 2, SIZE_MULTIPLE * 2, generator=torch.Generator().manual_seed(0))
        q = torch.zeros(1, dtype=torch.long)
        x = probe
        for i, stage in enumerate(self.g_a):
            x = stage(x)
            if i < len(self.gain_a):
                x = self.gain_a[i](x, q)
        factor = target_std / (float(x.std()) * float(self.gain_y.gain[0, 0]) + 1e-12)
        # on a 1/8-octave grid: the probe's std differs in its last bits with the number of CPU threads (the
        # convolutions' summation order), and a fresh model's codec id must not
        factor = 2.0 ** (round(math.log2(factor) * 8) / 8)
        self.gain_y.gain.mul_(factor)
        self.gain_y_inv.gain.div_(factor)

    @staticmethod
    def _build_latent_codec(config: CoTAMCodecConfig, gaussian_conditional: GaussianConditional) -> HyperpriorLatentCodec:
        """ELIC's hyperprior + space-channel context model (SCCTX), as in compressai."""
        N, M, Nh, groups = config.N, config.M, config.hyper_channels, config.groups
        c1, c2 = config.context_hidden
        h_a = nn.Sequential(
            conv(M, Nh, kernel_size=3, stride=1), nn.ReLU(inplace=True),
            conv(Nh, Nh, kernel_size=5, stride=2), nn.ReLU(inplace=True),
            conv(Nh, Nh, kernel_size=5, stride=2),
        )
        h_s = nn.Sequential(
            deconv(Nh, N, kernel_size=5, stride=2), nn.ReLU(inplace=True),
            deconv(N, N * 3 // 2, kernel_size=5, stride=2), nn.ReLU(inplace=True),
            deconv(N * 3 // 2, N * 2, kernel_size=3, stride=1),
        )
        channel_context = {  # g_ch^(k) in [He2022]
            f"y{k}": nn.Sequential(
                conv(sum(groups[:k]), c1, kernel_size=5, stride=1), nn.ReLU(inplace=True),
                conv(c1, c2, kernel_size=5, stride=1), nn.ReLU(inplace=True),
                conv(c2, groups[k] * 2, kernel_size=5, stride=1),
            )
            for k in range(1, len(groups))
        }
        device = torch.get_default_device()  # "meta" when from_pretrained builds a layout only

        def aggregation(in_ch: int, out_ch: int) -> nn.Sequential:
            # CompressAI computes the ramp's widths with torch.linspace, which has no values on the meta device:
            # widths on the CPU, layers where the model is built.
            with torch.device("cpu"):
                return sequential_channel_ramp(
                    in_ch, out_ch, min_ch=N * 2, num_layers=3, interp="linear",
                    make_layer=functools.partial(nn.Conv2d, device=device), make_act=lambda: nn.ReLU(inplace=True),
                    kernel_size=1, stride=1, padding=0,
                )

        scctx = {
            f"y{k}": CheckerboardLatentCodec(
                latent_codec={"y": _GaussianLatentCodec(gaussian_conditional=gaussian_conditional, quantizer="ste")},
                context_prediction=CheckerboardMaskedConv2d(  # g_sp^(k)
                    groups[k], groups[k] * 2, kernel_size=5, stride=1, padding=2
                ),
                entropy_parameters=aggregation(groups[k] * 2 + (k > 0) * groups[k] * 2 + N * 2, groups[k] * 2),
            )
            for k in range(len(groups))
        }
        return HyperpriorLatentCodec(
            latent_codec={
                "y": ChannelGroupsLatentCodec(groups=groups, channel_context=channel_context, latent_codec=scctx),
                "hyper": HyperLatentCodec(
                    entropy_bottleneck=EntropyBottleneck(Nh), h_a=h_a, h_s=h_s, quantizer="ste"
                ),
            }
        )

    def set_rate_quantizer(self, mode: str) -> None:
        """Training rate of ŷ: ``"noise"`` (CompressAI's additive uniform noise) or ``"ste"`` (the likelihood of the
        STE-rounded latent, as coded). Not part of the checkpoint: inference and bitstreams are unchanged."""
        if mode not in ("noise", "ste"):
            raise ConfigError(f"rate quantizer must be 'noise' or 'ste', got {mode!r}")
        for module in self.modules():
            if isinstance(module, _GaussianLatentCodec):
                module.rate_on_rounded = mode == "ste"

    def set_entropy_arithmetic(self, mode: str) -> None:
        """Choose the arithmetic of the entropy parameters for the streams this codec writes (see
        :attr:`entropy_arithmetic`); set it before encoding, since the container takes its kind from it."""
        self._arithmetic(mode)  # validates the name, and that the entropy model has a fixed-point form
        self.entropy_arithmetic = mode

    @property
    def container_kind(self) -> CodecKind:
        """The container kind of this codec's streams: learned, with float or fixed-point entropy parameters."""
        return CodecKind.LEARNED_FIXED if self.entropy_arithmetic == "fixed" else CodecKind.LEARNED

    def _arithmetic(self, mode: str) -> contextlib.AbstractContextManager:
        """The context that computes entropy parameters in ``mode`` (checked here, before any work)."""
        if mode not in ARITHMETICS:
            raise ConfigError(f"entropy arithmetic must be one of {', '.join(ARITHMETICS)}, got {mode!r}")
        if mode == "fixed":
            check_fixed_point(self)
            return fixed_point_entropy(self)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ quality handling
    def quality_tensor(self, quality: int | Tensor, batch: int, latent_hw: tuple[int, int]) -> Tensor:
        """Normalise ``quality`` to a long tensor: (B,) levels or a (B, h, w) map.

        Args:
            quality: an int, a (B,) tensor of levels, or a (B, h, w) / (h, w) map on the
                latent grid (h, w) = (H/16, W/16).
        """
        Q = self.config.num_qualities
        device = next(self.parameters()).device
        if isinstance(quality, Tensor):
            q = quality.to(device=device, dtype=torch.long)
            if q.dim() == 2:
                q = q.unsqueeze(0).expand(batch, -1, -1)
            if q.dim() == 3 and tuple(q.shape[-2:]) != tuple(latent_hw):
                raise ConfigError(f"quality map has shape {tuple(q.shape[-2:])}, the latent grid is {latent_hw}")
            if q.dim() not in (1, 3) or q.shape[0] != batch:
                raise ConfigError(f"quality tensor of shape {tuple(q.shape)} does not match batch {batch}")
        else:
            q = torch.full((batch,), self.config.check_quality(quality), dtype=torch.long, device=device)
        if q.numel() and (int(q.min()) < 0 or int(q.max()) >= Q):
            raise ConfigError(f"quality levels must lie in [0, {Q - 1}]")
        return q

    @staticmethod
    def _check_size(x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
            raise ConfigError(f"image height and width must be multiples of {SIZE_MULTIPLE}, got {tuple(x.shape[-2:])}")

    # ------------------------------------------------------------------ transforms
    def analysis(self, x: Tensor, q: Tensor) -> Tensor:
        """g_a with gains: x (B,3,H,W) → y' (B,M,H/16,W/16), the gained latent."""
        for i, stage in enumerate(self.g_a):
            x = stage(x)
            if i < len(self.gain_a):
                x = self.gain_a[i](x, q)
        return self.gain_y(x, q)

    def synthesis(self, y_hat_gained: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse gain then g_s: ŷ' (B,M,h,w) → (x̂ (B,3,16h,16w), ŷ (B,M,h,w))."""
        y_hat = self.gain_y_inv(y_hat_gained, q)
        x = y_hat
        for i, stage in enumerate(self.g_s):
            x = stage(x)
            if i < len(self.gain_s):
                x = self.gain_s[i](x, q)
        return x, y_hat

    # ------------------------------------------------------------------ training path
    def forward(self, x: Tensor, quality: int | Tensor) -> CodecOutput:
        """Differentiable pass (noise/STE quantization) for training.

        Args:
            x: images (B, 3, H, W) in [0, 1], H and W multiples of 64.
            quality: int, (B,) levels, or a (B, H/16, W/16) quality map.
        """
        self._check_size(x)
        q = self.quality_tensor(quality, x.shape[0], (x.shape[-2] // 16, x.shape[-1] // 16))
        y = self.analysis(x, q)
        out = self.latent_codec(y)
        x_hat, y_hat = self.synthesis(out["y_hat"], q)
        return CodecOutput(x_hat=x_hat, y_hat=y_hat, likelihoods=out["likelihoods"])

    # ------------------------------------------------------------------ entropy coding
    @property
    def is_finalized(self) -> bool:
        """Whether every entropy model has its CDF tables (needed for real bitstreams)."""
        models = [m for m in self.modules() if isinstance(m, (EntropyBottleneck, GaussianConditional))]
        return all(m._quantized_cdf.numel() > 0 for m in models)

    def finalize(self, force: bool = True) -> None:
        """Build the entropy models' CDF tables (CompressAI ``update()``) and mark the config."""
        self.update(force=force)
        self.config.finalized = True
        self._codec_id = None

    def _require_finalized(self) -> None:
        if not self.is_finalized:
            raise CodecNotFinalizedError(
                "this codec's entropy models are not finalized: call codec.finalize() "
                "(CompressAI update()) after training, then save it, before making bitstreams"
            )

    @torch.no_grad()
    def compress(self, x: Tensor, quality: int | Tensor, estimate: bool = False) -> CompressedLatent:
        """Entropy-code one image.

        Args:
            x: image (1, 3, H, W) in [0, 1], H and W multiples of 64.
            quality: int level, or an (h, w) / (1, h, w) map on the latent grid.
            estimate: also return the model's likelihoods of the coded symbols (one more
                pass of the entropy model; for measuring the entropy-coding overhead).
        """
        self._require_finalized()
        self._check_size(x)
        if x.shape[0] != 1:
            raise ConfigError("compress() codes one image at a time (batch size 1)")
        latent_hw = (x.shape[-2] // 16, x.shape[-1] // 16)
        q = self.quality_tensor(quality, 1, latent_hw)
        y = self.analysis(x, q)
        with self._arithmetic(self.entropy_arithmetic):
            with tap_symbols(self.latent_codec, "encode") as tap:
                out = self.latent_codec.compress(y)
            likelihoods = self.latent_codec(y)["likelihoods"] if estimate else {}
        strings = [s[0] for s in out["strings"]]
        y_hat = self.gain_y_inv(out["y_hat"], q)
        return CompressedLatent(
            strings=strings, y_shape=latent_hw, symbol_crc=tap.crc, y_hat=y_hat, likelihoods=likelihoods
        )

    def stream_count(self) -> int:
        """Number of rANS streams per image: 2 checkerboard passes per ŷ group, plus z."""
        return 2 * len(self.config.groups) + 1

    def _latent_decode_shape(self, h: int, w: int) -> Any:
        """The ``shape`` argument of ``latent_codec.decompress`` for a latent grid (h, w)."""
        return {"y": [(g, h, w) for g in self.config.groups], "hyper": (h // 4, w // 4)}

    def stream_symbols(self, y_shape: tuple[int, int]) -> list[int]:
        """Symbols in each rANS stream of an image with latent grid ``y_shape``, in stream order."""
        h, w = y_shape
        counts = []
        for g in self.config.groups:  # checkerboard anchors, then non-anchors
            anchors = g * ((h * w + 1) // 2)
            counts += [anchors, g * h * w - anchors]
        return counts + [self.config.hyper_channels * (h // 4) * (w // 4)]

    @torch.no_grad()
    def decompress(
        self,
        strings: list[bytes],
        y_shape: tuple[int, int],
        quality: int | Tensor,
        expected_symbol_crc: int | None = None,
        arithmetic: str | None = None,
    ) -> DecompressedLatent:
        """Decode one image from its rANS streams.

        Entropy decoding uses the bounds-checked decoder of :mod:`.rans` (never CompressAI's native one).

        Args:
            strings: as produced by :meth:`compress` (``stream_count()`` of them).
            y_shape: (h, w), the latent grid.
            quality: the level or (h, w) map the encoder used.
            expected_symbol_crc: the encoder's symbol checksum; when given, a mismatch raises
                before synthesis (the costly part) runs.
            arithmetic: the entropy arithmetic the encoder used (``"fixed"`` or ``"float"``: the container's kind
                says which); None: this codec's :attr:`entropy_arithmetic`.

        Raises:
            EntropyDecodingError: a stream cannot have been written with this codec's tables.
            SymbolMismatchError: the decoded symbols' checksum differs from ``expected_symbol_crc``.
        """
        self._require_finalized()
        if len(strings) != self.stream_count():
            raise ConfigError(f"expected {self.stream_count()} streams, got {len(strings)}")
        h, w = y_shape
        q = self.quality_tensor(quality, 1, (h, w))
        shape = self._latent_decode_shape(h, w)
        nested = [[s] for s in strings]
        with self._arithmetic(arithmetic or self.entropy_arithmetic), tap_symbols(self.latent_codec, "decode") as tap:
            out = self.latent_codec.decompress(nested, shape)
        if expected_symbol_crc is not None and tap.crc != expected_symbol_crc:
            raise SymbolMismatchError(
                f"decoded latent symbols differ from the encoder's (checksum {tap.crc:08x} != "
                f"{expected_symbol_crc:08x}); this usually means the decoder runs on a device or library whose "
                "entropy-model arithmetic differs from the encoder's"
            )
        x_hat, y_hat = self.synthesis(out["y_hat"], q)
        return DecompressedLatent(x_hat=x_hat.clamp_(0, 1), y_hat=y_hat, symbol_crc=tap.crc)

    # ------------------------------------------------------------------ identity & persistence
    @property
    def codec_id(self) -> bytes:
        """8-byte id: SHA-256 of the canonical config and every tensor (name, dtype, shape, bytes).

        Stored in every bitstream so a stream is never decoded by another model. Cached;
        recomputed after :meth:`finalize` and on load.
        """
        cached = getattr(self, "_codec_id", None)
        if cached is None:
            self._apply_context_masks()
            digest = hashlib.sha256(self.config.to_json_string().encode())
            for name, tensor in sorted(self.canonical_state().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
                digest.update(t.numpy().tobytes() if t.numel() else b"")
            cached = digest.digest()[:8]
            self._codec_id = cached
        return cached

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (CDF tables included when finalized)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.config.finalized and not self.is_finalized:
            raise CodecNotFinalizedError("config says finalized but the CDF tables are empty; call finalize()")
        self._apply_context_masks()
        state = {k: v.detach().cpu().contiguous() for k, v in self.canonical_state().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "codec_id": self.codec_id.hex()})
        self.config.save(directory)
        return directory

    @torch.no_grad()
    def _apply_context_masks(self) -> None:
        """Zero the masked taps of the checkerboard context convolutions.

        CompressAI's ``CheckerboardMaskedConv2d`` masks its weight in place at every
        forward, so a fresh or just-optimised model stores different weights before
        and after its first forward. Masking before hashing, saving and after loading
        keeps the codec id and the checkpoint independent of that.
        """
        for module in self.modules():
            if isinstance(module, CheckerboardMaskedConv2d):
                module.weight.mul_(module.mask)

    def canonical_state(self) -> dict[str, Tensor]:
        """Every parameter and buffer once, under its first name (shared modules deduplicated)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    @torch.no_grad()
    def load_canonical_state(self, state: dict[str, Tensor], source: str = "state") -> None:
        """Copy ``state`` (as written by :meth:`save_pretrained`) into this model, after validating all of it.

        Names and dtypes must match exactly, and shapes too except the entropy models' CDF tables,
        which are resized to the saved ones; every floating tensor must be finite and every CDF
        table valid for the native coder (see :mod:`cotam_llava.codec.checkpoint`). Nothing is
        copied unless everything passes.

        Raises:
            CheckpointError: naming the first missing, unexpected, mis-shaped or invalid tensor.
        """
        from .checkpoint import TABLE_BUFFERS, check_layout, check_values

        own = self.canonical_state()
        check_layout(own, {name: (t.dtype, tuple(t.shape)) for name, t in state.items()}, source)
        check_values(self, state, self.config.finalized, source)
        for name, tensor in own.items():
            src = state[name]
            if src.shape != tensor.shape and name.rsplit(".", 1)[-1] in TABLE_BUFFERS:
                tensor.resize_(src.shape)
            tensor.copy_(src)
        self._apply_context_masks()
        self._codec_id = None

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "CoTAMELIC":
        """Load a codec saved by :meth:`save_pretrained`, validating it as input from an untrusted source.

        The config is checked first (types, bounds, a parameter budget), then the safetensors
        header (sizes, dtypes, byte ranges) against the names and shapes the config builds (a layout on the
        ``meta`` device: nothing allocated), all before the model is built; no tensor is read until then, and
        none reaches the model until every value passed (finite weights, valid CDF tables). Never unpickles.

        Raises:
            ConfigError: ``config.json`` is malformed or names an invalid or oversized architecture.
            CheckpointError: the folder, the weights file or a tensor in it is missing or invalid.
        """
        from .checkpoint import check_layout, load_tensors, read_safetensors_header

        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint folder {directory} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory} is not a codec checkpoint: {name} is missing")
        from .loading import codec_class, model_type_of

        model_type = model_type_of(directory)
        target = codec_class(model_type)  # one loader for every learned base: dispatch on model_type
        if target is not cls:
            if not issubclass(target, cls):
                raise ConfigError(f"{directory} holds a {model_type} codec, which {cls.__name__} cannot load; "
                                  "use CoTAMELIC.from_pretrained (or codec.loading.load_codec), which loads every kind")
            return target.from_pretrained(directory, map_location)
        config = cls.config_class.load(directory)
        header = read_safetensors_header(directory / WEIGHTS_NAME)
        with torch.device("meta"):  # the layout the config builds (names, dtypes, shapes), without allocating it
            layout = cls(config).canonical_state()
        check_layout(layout, {name: (r.dtype, r.shape) for name, r in header.items()}, str(directory))
        model = cls(config)
        model.load_canonical_state(load_tensors(directory / WEIGHTS_NAME), source=str(directory))
        model.to(map_location)
        model.eval()
        return model

    @classmethod
    def from_preset(cls, name: str, seed: int | None = None, **overrides: Any) -> "CoTAMELIC":
        """A freshly initialised (untrained) codec from a preset; ``seed`` makes it reproducible.

        DCAE presets (``dcae``, ``dcae-small``, ``dcae-tiny``) build a :class:`~cotam_llava.codec.dcae.CoTAMDCAE`.
        """
        from .loading import preset_class

        target = preset_class(name)
        if target is not cls and issubclass(target, cls):
            return target.from_preset(name, seed=seed, **overrides)
        config = cls.config_class.from_preset(name, **overrides)
        if seed is None:
            return cls(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
