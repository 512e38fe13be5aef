"""Entropy parameters that every device computes bit for bit alike: the learned codec's fixed-point mode.

rANS decodes the right integers only if the decoder's probability tables are the encoder's, bit for bit. The
tables come from the entropy-parameter networks (ELIC: h_s, the channel contexts g_ch, the checkerboard contexts
g_sp and the parameter aggregation), and float arithmetic does not give the same bits on every device: a sum
of thousands of products depends on the order the kernel adds them in, which differs between CPU kinds,
thread counts, oneDNN and im2col kernels, and CUDA (CompressAI issue #279). The symbol checksum detects that;
this module removes it.

In fixed-point mode every convolution of those networks computes on integers held in float64:

    x_q = clamp(round(x · 2^A), ±X)      w_q = round(w · 2^W)      b_q = round(b · 2^(A+W))
    out = (conv(x_q, w_q) + b_q) · 2^-(A+W)     → float32

Every product and every partial sum is an integer of magnitude at most ``max_c Σ|w_q[c]| · X + max|b_q| ≤ 2^53``
(``X`` is chosen per layer so that this holds), and float64 represents every such integer exactly, so **no sum
is ever rounded, in any order**: the result does not depend on the kernel, the thread count or the device. The
remaining operations (rounding to the grid, ReLU, the float32 cast, concatenation, the scale-table comparison,
``symbol + mean``) are exactly rounded IEEE operations, identical everywhere. With A = 12 and W = 20 an output differs from the float
one by about 1e-4 (a mean 1e-4 off costs nothing measurable), and the clamp sits far above any activation a real
image makes (it starts at |x| ≈ 2^15 on the shipped codec), so the rate is the float one to within a few bytes per
image (docs/bitstream.md has the measurement).

Only the entropy-parameter networks run this way; the analysis and synthesis transforms stay in float (they
change the picture by a rounding error, not the symbols). A stream's container says which arithmetic made it
(:class:`~cotam_llava.codec.container.CodecKind` ``LEARNED_FIXED``), so float streams of earlier writers still decode.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["ACT_BITS", "WEIGHT_BITS", "ARITHMETICS", "entropy_networks", "check_fixed_point", "fixed_point_entropy"]

#: Fraction bits of activations and of weights on the fixed-point grid.
ACT_BITS = 12
WEIGHT_BITS = 20
#: The clamp of a layer's inputs must leave at least this magnitude (in real units) untouched, or the layer is refused.
MIN_RANGE = 2.0 ** 10
#: The entropy arithmetics a learned codec can code with.
ARITHMETICS = ("float", "fixed")
_EXACT_LIMIT = 2.0 ** 53  # every integer of at most this magnitude is exact in float64
#: Modules that may appear in an entropy-parameter network run in fixed point (anything else is refused).
_PASSIVE = (nn.Sequential, nn.ModuleDict, nn.ModuleList, nn.Identity, nn.ReLU)


def entropy_networks(model: nn.Module) -> list[nn.Module]:
    """The networks whose outputs set the rANS tables: every part of the latent codec but the encoder-only h_a."""
    codec = model.latent_codec
    skip = {id(m) for name, m in codec.named_modules() if name == "hyper.h_a" or name.startswith("hyper.h_a.")}
    return [m for m in codec.modules() if id(m) not in skip]


def _convolutions(model: nn.Module) -> list[nn.Module]:
    return [m for m in entropy_networks(model) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def check_fixed_point(model: nn.Module) -> None:
    """Raise ``ConfigError`` unless every layer of ``model``'s entropy networks has a fixed-point form here
    (convolutions and ReLUs; ELIC's entropy model. DCAE's has attention, LayerNorm and GELU, which do not)."""
    from .._compressai import compressai  # noqa: F401  (the shim first)
    from compressai.entropy_models import EntropyModel
    from compressai.latent_codecs import LatentCodec
    from compressai.ops import LowerBound

    for module in entropy_networks(model):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, EntropyModel, LatentCodec, LowerBound, *_PASSIVE)):
            continue
        if type(module) is nn.ParameterList:
            continue
        raise ConfigError(
            f"{type(model).__name__}'s entropy model has a {type(module).__name__} layer, which has no exact "
            "fixed-point form here: code it with entropy_arithmetic='float'"
        )


class _FixedConv:
    """One convolution's integer weights, and its forward on the fixed-point grid."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.transposed = isinstance(module, nn.ConvTranspose2d)
        weight = module.weight.detach()
        if hasattr(module, "mask"):  # CompressAI's masked context convolutions
            weight = weight * module.mask
        self.weight = torch.round(weight.double() * 2.0 ** WEIGHT_BITS)
        bias = module.bias.detach() if module.bias is not None else weight.new_zeros(self.weight.shape[1 if self.transposed else 0])
        self.bias = torch.round(bias.double() * 2.0 ** (ACT_BITS + WEIGHT_BITS))
        # Σ|w_q| feeding one output (an upper bound for a transposed convolution, whose outputs see subsets).
        per_output = self.weight.abs().sum(dim=(0, 2, 3) if self.transposed else (1, 2, 3))
        total = float(per_output.max()) if per_output.numel() else 0.0
        headroom = _EXACT_LIMIT - float(self.bias.abs().max()) if self.bias.numel() else _EXACT_LIMIT
        self.clamp = float(torch.floor(torch.tensor(headroom / max(total, 1.0), dtype=torch.float64)))
        if self.clamp < MIN_RANGE * 2.0 ** ACT_BITS:
            raise ConfigError(
                f"a {type(module).__name__} of the entropy model has weights too large for exact fixed point "
                f"(Σ|w| = {total / 2 ** WEIGHT_BITS:.3g}): code it with entropy_arithmetic='float'"
            )

    def __call__(self, x: Tensor) -> Tensor:
        m = self.module
        xq = torch.round(x.double() * 2.0 ** ACT_BITS).clamp_(-self.clamp, self.clamp)
        w = self.weight.to(xq.device)
        if self.transposed:
            out = F.conv_transpose2d(xq, w, None, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        else:
            out = F.conv2d(xq, w, None, m.stride, m.padding, m.dilation, m.groups)
        out = out + self.bias.to(out.device).view(1, -1, 1, 1)
        return (out * 2.0 ** -(ACT_BITS + WEIGHT_BITS)).to(x.dtype)


@contextlib.contextmanager
def fixed_point_entropy(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s entropy-parameter convolutions on the exact fixed-point grid inside the block.

    The weights are read when the block starts (so it always uses the current ones). On CUDA, cuDNN is
    switched off inside the block: its FFT and Winograd algorithms do not compute sums of products exactly.

    Raises:
        ConfigError: the entropy model has a layer with no fixed-point form (see :func:`check_fixed_point`).
    """
    check_fixed_point(model)
    convs = _convolutions(model)
    fixed = [_FixedConv(m) for m in convs]
    try:
        for module, fx in zip(convs, fixed):
            module.forward = fx  # an instance attribute: nn.Module.__call__ finds it before the class's forward
        with torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        for module in convs:
            module.__dict__.pop("forward", None)
