"""DCAE's layers: Swin window attention in plain PyTorch, ConvGLU, the dictionary-based latent codec, and
:func:`build_dcae_modules`, which assembles every module of a :class:`~cotam_llava.codec.dcae.CoTAMDCAE`.

Kept apart from the codec class so the config (:mod:`.dcae_configuration`) can count the parameters a config
builds (on the ``meta`` device) without importing the codec. See :mod:`.dcae` for the data flow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._compressai import compressai  # noqa: F401  (import order: the shim first)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs.base import LatentCodec
from compressai.models.sensetime import ResidualBottleneckBlock
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste

from .gains import QualityGains, initial_latent_gains


if TYPE_CHECKING:  # pragma: no cover - typing only
    from .dcae_configuration import CoTAMDCAEConfig

__all__ = ["DictionaryLatentCodec", "WindowAttention", "SwinStage", "build_dcae_modules"]

#: Added to the attention logits of masked keys (finite, so that a row with every key masked stays a number).
_MASKED = -1e4


# ============================================================================ window attention (Swin, plain torch)
def _window_partition(x: Tensor, p: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of p → (B, nW, p·p, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // p, p, W // p, p, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // p) * (W // p), p * p, C)


def _window_merge(x: Tensor, p: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`_window_partition`: (B, nW, p·p, C) → (B, H, W, C)."""
    B, _, _, C = x.shape
    x = x.view(B, H // p, W // p, p, p, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def _attention_mask(H: int, W: int, p: int, shift: int, device: torch.device) -> Tensor | None:
    """Keys each query must ignore, (nW, p², p²) bool, for an H×W map padded to multiples of p; None if none.

    A key is ignored when it is padding, or (shifted windows) when it comes from another region of the cyclically
    shifted map (Liu et al. 2021, Swin's SW-MSA mask).
    """
    Hp, Wp = -(-H // p) * p, -(-W // p) * p
    if not shift and Hp == H and Wp == W:
        return None
    pad = torch.zeros(Hp, Wp, dtype=torch.bool, device=device)
    pad[H:, :] = True
    pad[:, W:] = True
    region = torch.zeros(Hp, Wp, dtype=torch.long, device=device)
    if shift:
        pad = torch.roll(pad, shifts=(-shift, -shift), dims=(0, 1))
        bounds_h = ((0, Hp - p), (Hp - p, Hp - shift), (Hp - shift, Hp))
        bounds_w = ((0, Wp - p), (Wp - p, Wp - shift), (Wp - shift, Wp))
        for i, (h0, h1) in enumerate(bounds_h):
            for j, (w0, w1) in enumerate(bounds_w):
                region[h0:h1, w0:w1] = 3 * i + j
    pad_w = _window_partition(pad[None, :, :, None], p)[0, :, :, 0]  # (nW, N)
    region_w = _window_partition(region[None, :, :, None], p)[0, :, :, 0]
    return pad_w[:, None, :] | (region_w[:, :, None] != region_w[:, None, :])


class WindowAttention(nn.Module):
    """Multi-head self-attention inside p×p windows, optionally shifted by p/2, with a relative position bias.

    Liu et al., "Swin Transformer", ICCV 2021 (W-MSA / SW-MSA), as used in DCAE's transforms. Maps whose sides are
    not multiples of p are padded and the padding is masked out of every window's keys, so any size works.

    Args:
        dim: channels C; head_dim: channels per head (divides C); window_size: p; shifted: SW-MSA instead of W-MSA.
    """

    def __init__(self, dim: int, head_dim: int, window_size: int, shifted: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.window_size, self.shifted = dim // head_dim, head_dim, window_size, shifted
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias = nn.Parameter(torch.zeros(self.heads, 2 * window_size - 1, 2 * window_size - 1))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        self._cache: dict[Any, Tensor | None] = {}

    def _bias(self) -> Tensor:
        """(heads, p², p²): bias[h, i, j] = table[h, Δrow(i, j) + p − 1, Δcol(i, j) + p − 1]."""
        p, device = self.window_size, self.relative_position_bias.device
        key = ("index", device)
        if key not in self._cache:
            with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode (training)
                self._cache[key] = self._relative_index(p, device)
        index = self._cache[key]
        return self.relative_position_bias[:, index[0], index[1]]

    @staticmethod
    def _relative_index(p: int, device: torch.device) -> Tensor:
        """(2, p², p²): row and column offsets of every (query, key) pair in a window, shifted to [0, 2p − 2]."""
        rows, cols = torch.meshgrid(torch.arange(p, device=device), torch.arange(p, device=device), indexing="ij")
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        return torch.stack([rows[:, None] - rows[None, :] + p - 1, cols[:, None] - cols[None, :] + p - 1])

    def _mask(self, H: int, W: int, shift: int, device: torch.device) -> Tensor | None:
        key = (H, W, shift, device)
        if key not in self._cache:
            if len(self._cache) > 16:  # a few image sizes at a time
                self._cache = {k: v for k, v in self._cache.items() if k[0] == "index"}
            with torch.inference_mode(False):
                self._cache[key] = _attention_mask(H, W, self.window_size, shift, device)
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        B, H, W, C = x.shape
        p = self.window_size
        Hp, Wp = -(-H // p) * p, -(-W // p) * p
        shift = p // 2 if self.shifted and (Hp > p or Wp > p) else 0
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = _window_partition(x, p)  # (B, nW, N, C)
        nW, N = windows.shape[1], windows.shape[2]
        q, k, v = self.qkv(windows).view(B, nW, N, 3, self.heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        bias = self._bias()
        mask = self._mask(H, W, shift, x.device)
        if mask is not None:
            bias = bias[None] + mask[:, None].to(bias.dtype) * _MASKED  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, nW, heads, N, d)
        out = self.proj(out.transpose(2, 3).reshape(B, nW, N, C))
        out = _window_merge(out, p, Hp, Wp)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :H, :W, :]


class ConvGLU(nn.Module):
    """Convolutional GLU feed-forward (Shi, "TransNeXt", CVPR 2024), channels last: x·W₁ → (a, v); GELU(dw3×3(a))·v → W₂.

    Args:
        dim: channels in and out; hidden: nominal hidden width (the gate and value branches have hidden/2 each).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        half = hidden // 2
        self.fc1 = nn.Linear(dim, 2 * half)
        self.dwconv = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(half, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        a, v = self.fc1(x).chunk(2, dim=-1)
        a = self.dwconv(a.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(a) * v)


class SwinBlock(nn.Module):
    """DCAE's transformer block: x·s₁ + (S)W-MSA(LN(x)), then x·s₂ + ConvGLU(LN(x)), with learned residual scales."""

    def __init__(self, dim: int, head_dim: int, window_size: int, shifted: bool, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, head_dim, window_size, shifted)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = ConvGLU(dim, mlp_ratio * dim)
        self.res_scale_1 = nn.Parameter(torch.ones(dim))
        self.res_scale_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.res_scale_1 + self.attn(self.ln1(x))
        return x * self.res_scale_2 + self.mlp(self.ln2(x))


class SwinStage(nn.Module):
    """``blocks`` Swin blocks (W-MSA, SW-MSA, W-MSA, …) and a 3×3 convolution around a residual, channels first.

    Args:
        dim: channels; head_dim: channels per head; window_size: p; blocks: number of transformer blocks.
    """

    def __init__(self, dim: int, head_dim: int, window_size: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, head_dim, window_size, shifted=i % 2 == 1) for i in range(blocks))
        self.conv = conv(dim, dim, kernel_size=3, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) → (B, C, H, W)."""
        t = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            t = block(t)
        return self.conv(t.permute(0, 3, 1, 2)) + x


def _down(cin: int, cout: int, res_blocks: int) -> list[nn.Module]:
    """A 5×5 stride-2 convolution, then residual bottleneck blocks (DCAE's ResidualBottleneckBlockWithStride)."""
    return [conv(cin, cout, kernel_size=5, stride=2), *(ResidualBottleneckBlock(cout, cout) for _ in range(res_blocks))]


def _up(cin: int, cout: int, res_blocks: int) -> list[nn.Module]:
    """Residual bottleneck blocks, then a 5×5 stride-2 transposed convolution (ResidualBottleneckBlockWithUpsample)."""
    return [*(ResidualBottleneckBlock(cin, cin) for _ in range(res_blocks)), deconv(cin, cout, kernel_size=5, stride=2)]


# ============================================================================ dictionary-based entropy model
class _ConvWithDW(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_trans = nn.Conv2d(dim, dim, kernel_size=1)
        self.dw_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.out_trans = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_trans(F.gelu(self.dw_conv(F.gelu(self.in_trans(x)))))


class MultiScaleAggregation(nn.Module):
    """DCAE's local aggregation before the dictionary query: 1×1 conv, a dense block of three depthwise-separable
    layers (their outputs concatenated and projected), gated by a 7×7 spatial attention (CBAM, Woo et al. 2018)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.s = nn.Conv2d(dim, dim, kernel_size=1)
        self.dense = nn.ModuleList(_ConvWithDW(dim) for _ in range(3))
        self.proj = nn.Conv2d(4 * dim, dim, kernel_size=1)
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        outputs = [self.s(x.permute(0, 3, 1, 2))]
        for layer in self.dense:
            outputs.append(layer(F.gelu(outputs[-1])))
        s = self.proj(torch.cat(outputs, dim=1))
        gate = torch.sigmoid(self.spatial(torch.cat([s.mean(dim=1, keepdim=True), s.amax(dim=1, keepdim=True)], dim=1)))
        return (s * gate).permute(0, 2, 3, 1)


class DictionaryCrossAttention(nn.Module):
    """Cross-attention from each latent position to a learned dictionary (DCAE's multi-scale dictionary CA + GLU).

    The query is the slice's context (hyperprior means and scales, previously decoded slices), aggregated locally;
    keys are a projection of the layer-normed dictionary, values the layer-normed dictionary itself; per-head learned
    logit scales. Output: an M-channel "dictionary prior" for the slice's entropy parameters.

    Args:
        input_dim: channels of the query context; output_dim: channels out (M); heads, head_dim: the dictionary is
            heads·head_dim wide; mlp_ratio: ConvGLU width.
    """

    def __init__(self, input_dim: int, output_dim: int, heads: int, head_dim: int, mlp_ratio: int) -> None:
        super().__init__()
        dim = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.x_trans = nn.Linear(input_dim, dim)
        self.ln_scale = nn.LayerNorm(dim)
        self.aggregation = MultiScaleAggregation(dim)
        self.lnx = nn.LayerNorm(dim)
        self.q_trans = nn.Linear(dim, dim)
        self.dict_ln = nn.LayerNorm(dim)
        self.k = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.ones(heads, 1, 1))
        self.linear = nn.Linear(dim, dim)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = ConvGLU(dim, mlp_ratio * dim)
        self.output_trans = nn.Linear(dim, output_dim)
        self.res_scale_1 = nn.Parameter(torch.ones(dim))
        self.res_scale_2 = nn.Parameter(torch.ones(dim))
        self.res_scale_3 = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        """x: (B, input_dim, h, w), dictionary: (K, dim) → (B, output_dim, h, w)."""
        B, _, H, W = x.shape
        x = self.x_trans(x.permute(0, 2, 3, 1))
        x = self.aggregation(self.ln_scale(x)) + x * self.res_scale_1
        shortcut = x
        q = self.q_trans(self.lnx(x)).reshape(B, H * W, self.heads, self.head_dim).transpose(1, 2)  # (B, e, hw, c)
        d = self.dict_ln(dictionary)
        k = self.k(d).view(-1, self.heads, self.head_dim).transpose(0, 1)  # (e, K, c)
        v = d.view(-1, self.heads, self.head_dim).transpose(0, 1)
        out = F.scaled_dot_product_attention(q * self.logit_scale, k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1),
                                             scale=1.0)
        out = out.transpose(1, 2).reshape(B, H, W, -1)
        out = self.linear(out) + shortcut * self.res_scale_2
        out = self.mlp(self.ln_mlp(out)) + out * self.res_scale_3
        return self.output_trans(out).permute(0, 3, 1, 2)


def _parameter_net(cin: int, hidden: tuple[int, int], cout: int) -> nn.Sequential:
    c1, c2 = hidden
    return nn.Sequential(conv(cin, c1, kernel_size=3, stride=1), nn.GELU(), conv(c1, c2, kernel_size=3, stride=1),
                         nn.GELU(), conv(c2, cout, kernel_size=3, stride=1))


class DictionaryLatentCodec(LatentCodec):
    """DCAE's entropy model as a CompressAI latent codec: hyperprior (two synthesis branches), channel slices coded in
    order, each with a dictionary cross-attention prior, a Gaussian conditional, and latent residual prediction.

    ``forward(y)`` → ``{"y_hat", "likelihoods": {"y", "z"}}``; ``compress(y)`` → ``{"strings": [slice 1 … S, z],
    "shape", "y_hat"}``; ``decompress(strings, (h, w))`` → ``{"y_hat"}``. ŷ' is bit-identical on both sides.
    """

    rate_on_rounded: bool = False

    def __init__(self, config: CoTAMDCAEConfig) -> None:
        super().__init__()
        N, M, Z, r = config.N, config.M, config.z_channels, config.num_res_blocks
        hb, hhd, hp = config.hyper_blocks, config.hyper_head_dim, config.hyper_window_size
        self.num_slices, self.max_support = config.num_slices, config.max_support_slices
        self.h_a = nn.Sequential(*_down(M, N, r), SwinStage(N, hhd, hp, hb), conv(N, Z, kernel_size=3, stride=2))
        self.h_s_scale = nn.Sequential(deconv(Z, N, kernel_size=3, stride=2), SwinStage(N, hhd, hp, hb), *_up(N, M, r))
        self.h_s_mean = nn.Sequential(deconv(Z, N, kernel_size=3, stride=2), SwinStage(N, hhd, hp, hb), *_up(N, M, r))
        self.entropy_bottleneck = EntropyBottleneck(Z)
        self.gaussian_conditional = GaussianConditional(None)
        self.dictionary = nn.Parameter(torch.randn(config.dict_size, config.dict_heads * config.dict_head_dim))
        width = M // config.num_slices
        query = [2 * M + width * min(i, self.max_support) for i in range(config.num_slices)]
        hidden = tuple(config.context_hidden)
        self.dict_attention = nn.ModuleList(
            DictionaryCrossAttention(q, M, config.dict_heads, config.dict_head_dim, config.dict_mlp_ratio) for q in query
        )
        self.mean_transforms = nn.ModuleList(_parameter_net(q + M, hidden, width) for q in query)
        self.scale_transforms = nn.ModuleList(_parameter_net(q + M, hidden, width) for q in query)
        self.lrp_transforms = nn.ModuleList(_parameter_net(q + M + width, hidden, width) for q in query)

    def _slice_parameters(self, index: int, priors: list[Tensor], decoded: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(support, μ, σ) of slice ``index`` from the hyperpriors and the slices decoded before it."""
        query = torch.cat(priors + decoded[: self.max_support], dim=1)
        support = torch.cat([query, self.dict_attention[index](query, self.dictionary)], dim=1)
        return support, self.mean_transforms[index](support), self.scale_transforms[index](support)

    def _refine(self, index: int, support: Tensor, y_hat_slice: Tensor) -> Tensor:
        """Latent residual prediction: ŷ'_s + ½·tanh(g_lrp([support, ŷ'_s]))."""
        return y_hat_slice + 0.5 * torch.tanh(self.lrp_transforms[index](torch.cat([support, y_hat_slice], dim=1)))

    def forward(self, y: Tensor) -> dict[str, Any]:
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        priors = [self.h_s_scale(z_hat), self.h_s_mean(z_hat)]
        gc = self.gaussian_conditional
        decoded, likelihoods = [], []
        for index, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            support, mu, scale = self._slice_parameters(index, priors, decoded)
            y_hat_slice = quantize_ste(y_slice - mu) + mu
            if self.training and self.rate_on_rounded:  # the rate of the rounded latent, as coded (see model.py)
                lk = gc._likelihood(y_hat_slice, scale, mu)
                lk = gc.likelihood_lower_bound(lk) if gc.use_likelihood_bound else lk
            else:
                _, lk = gc(y_slice, scale, mu)
            likelihoods.append(lk)
            decoded.append(self._refine(index, support, y_hat_slice))
        return {"likelihoods": {"y": torch.cat(likelihoods, dim=1), "z": z_likelihoods}, "y_hat": torch.cat(decoded, 1)}

    def compress(self, y: Tensor) -> dict[str, Any]:
        z = self.h_a(y)
        shape = z.size()[-2:]
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, shape)
        priors = [self.h_s_scale(z_hat), self.h_s_mean(z_hat)]
        gc = self.gaussian_conditional
        decoded, strings = [], []
        for index, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            support, mu, scale = self._slice_parameters(index, priors, decoded)
            indexes = gc.build_indexes(scale)
            strings.append(gc.compress(y_slice, indexes, means=mu))
            decoded.append(self._refine(index, support, gc.quantize(y_slice, "dequantize", mu)))
        return {"strings": [*strings, z_strings], "shape": shape, "y_hat": torch.cat(decoded, dim=1)}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], **kwargs: Any) -> dict[str, Any]:
        """strings: S slice streams then z (one image each); shape: the latent grid (h, w)."""
        *y_strings, z_strings = strings
        h, w = shape
        z_hat = self.entropy_bottleneck.decompress(z_strings, (h // 4, w // 4))
        priors = [self.h_s_scale(z_hat), self.h_s_mean(z_hat)]
        gc = self.gaussian_conditional
        decoded: list[Tensor] = []
        for index in range(self.num_slices):
            support, mu, scale = self._slice_parameters(index, priors, decoded)
            y_hat_slice = gc.decompress(y_strings[index], gc.build_indexes(scale), means=mu)
            decoded.append(self._refine(index, support, y_hat_slice))
        return {"y_hat": torch.cat(decoded, dim=1)}


# ============================================================================ the codec
def build_dcae_modules(config: CoTAMDCAEConfig, into: nn.Module | None = None) -> nn.Module:
    """Build every module of a :class:`CoTAMDCAE` (transforms, gains, latent codec) into ``into`` (a bare
    ``nn.Module`` when None). The config's parameter count is taken from this on the ``meta`` device."""
    module = nn.Module() if into is None else into
    M, Q, r, p = config.M, config.num_qualities, config.num_res_blocks, config.window_size
    (c0, c1, c2), (b0, b1, b2), hd = config.stage_channels, config.stage_blocks, config.head_dim
    module.g_a = nn.ModuleList([
        nn.Sequential(*_down(3, c0, r), SwinStage(c0, hd[0], p, b0)),
        nn.Sequential(*_down(c0, c1, r), SwinStage(c1, hd[1], p, b1)),
        nn.Sequential(*_down(c1, c2, r), SwinStage(c2, hd[2], p, b2)),
        nn.Sequential(conv(c2, M, kernel_size=5, stride=2)),
    ])
    module.g_s = nn.ModuleList([
        nn.Sequential(deconv(M, c2, kernel_size=5, stride=2), SwinStage(c2, hd[3], p, b2)),
        nn.Sequential(*_up(c2, c1, r), SwinStage(c1, hd[4], p, b1)),
        nn.Sequential(*_up(c1, c0, r), SwinStage(c0, hd[5], p, b0)),
        nn.Sequential(*_up(c0, 3, r)),
    ])
    latent_init = initial_latent_gains(config.lambdas)
    mid = config.intermediate_gains
    module.gain_a = nn.ModuleList([QualityGains(Q, c) for c in (c0, c1, c2)] if mid else [])
    module.gain_y = QualityGains(Q, M, init=latent_init)
    module.gain_y_inv = QualityGains(Q, M, init=1.0 / latent_init)
    module.gain_s = nn.ModuleList([QualityGains(Q, c) for c in (c2, c1, c0)] if mid else [])
    module.latent_codec = DictionaryLatentCodec(config)
    return module
