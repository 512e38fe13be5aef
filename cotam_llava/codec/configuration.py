"""Configuration of the variable-rate ELIC codec (``CoTAMCodecConfig``) and its presets.

The config is saved beside the weights as ``config.json``; loading rejects
unknown keys and invalid values with :class:`~cotam_llava.errors.ConfigError`
(no architecture is ever guessed from tensor shapes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import check_bool, check_int, check_int_list, check_str, describe, read_json
from ..errors import ConfigError

__all__ = ["CodecConfigMixin", "CoTAMCodecConfig", "PRESETS", "PAPER_LAMBDAS", "CONFIG_NAME", "WEIGHTS_NAME", "CODEC_SUBFOLDER", "MAX_PARAMETERS"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Where a model, tower or adapter folder keeps the codec checkpoint it runs with.
CODEC_SUBFOLDER = "codec"

#: The paper's λ table (appendix A.3), L = D + λ·R with D the MSE of [0, 1] images and
#: R in bits per pixel. Larger λ → lower rate. Quality index q ∈ [0, 9] uses
#: ``PAPER_LAMBDAS[9 - q]``: q = 9 is the best quality (smallest λ).
PAPER_LAMBDAS: tuple[float, ...] = (
    0.00002, 0.00005, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128,
)

MODEL_TYPE = "cotam-elic"

#: Bounds on a config from an untrusted checkpoint (the ``elic`` preset, N=192 M=320, is well inside them):
#: widths of any layer, ŷ groups, residual blocks per stage, and the parameters the whole model may have
#: (200M float32 weights: 0.8 GB), so that no config.json can make the loader allocate without bound.
MAX_CHANNELS = 1024
MAX_GROUPS = 16
MAX_RES_BLOCKS = 8
MAX_PARAMETERS = 200_000_000


class CodecConfigMixin:
    """What every learned codec's config shares: λ per quality, the quality check, canonical JSON, save / load
    (size-capped, validated), presets. A subclass is a dataclass with ``lambdas`` and ``num_qualities`` and
    says which presets it builds (:meth:`preset_table`)."""

    lambdas: list[float]
    num_qualities: int

    @classmethod
    def preset_table(cls) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ λ per quality
    def lambda_for_quality(self, quality: int) -> float:
        """λ of quality index ``quality`` (0 = lowest rate, ``num_qualities-1`` = best)."""
        self.check_quality(quality)
        return self.lambdas[self.num_qualities - 1 - quality]

    def check_quality(self, quality: int) -> int:
        """Return ``quality`` as an int, or raise :class:`ConfigError` when out of range."""
        try:  # int(nan), int(inf) and int("x") raise; a bool is not a level
            valid = not isinstance(quality, bool) and int(quality) == quality and 0 <= quality < self.num_qualities
        except (TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise ConfigError(f"quality must be an integer in [0, {self.num_qualities - 1}], got {describe(quality)}")
        return int(quality)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """Canonical JSON (sorted keys): also what the codec id hashes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CodecConfigMixin":
        from .._config import strict_from_dict

        return strict_from_dict(cls, data, "codec")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json_string())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "CodecConfigMixin":
        """Read ``config.json`` from ``directory`` (at most 1 MiB, checked before reading) and validate it."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no {CONFIG_NAME} in {directory}")
        data = read_json(path, "codec config")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "CodecConfigMixin":
        """Build one of the class's presets (:meth:`preset_table`), optionally overriding keys."""
        presets = cls.preset_table()
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r} for {cls.__name__}; choose from {', '.join(presets)}")
        return cls.from_dict({**presets[name], "preset": name, **overrides})


@dataclass
class CoTAMCodecConfig(CodecConfigMixin):
    """Architecture and state of a :class:`~cotam_llava.codec.model.CoTAMELIC` codec.

    Args:
        N: channels of the main transforms (ELIC: 192).
        M: channels of the latent ŷ (ELIC: 320); ŷ has shape (M, H/16, W/16).
        groups: ELIC's uneven channel groups of ŷ; must sum to ``M``.
        num_res_blocks: residual bottleneck blocks per resolution stage (ELIC: 3).
        attention: use ELIC's two attention blocks in g_a and g_s.
        hyper_channels: channels of the hyperprior z (ELIC: N).
        context_hidden: hidden widths of the channel-context networks g_ch (ELIC: 224, 128).
        num_qualities: quality levels in one model (paper: 10).
        lambdas: λ per level in the paper's order (ascending λ, i.e. descending quality).
        intermediate_gains: also apply gain vectors after each g_a / g_s stage
            (DCVC-RT style), not only on the latent (Cui et al. 2021).
        finalized: the entropy models' CDF tables were built (``update()``) and are
            saved with the weights; only a finalized codec can make bitstreams.
        preset: name of the preset the config came from (informational).
    """

    N: int = 192
    M: int = 320
    groups: list[int] = field(default_factory=lambda: [16, 16, 32, 64, 192])
    num_res_blocks: int = 3
    attention: bool = True
    hyper_channels: int = 192
    context_hidden: list[int] = field(default_factory=lambda: [224, 128])
    num_qualities: int = 10
    lambdas: list[float] = field(default_factory=lambda: list(PAPER_LAMBDAS))
    intermediate_gains: bool = True
    finalized: bool = False
    preset: str = "custom"
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("groups", "context_hidden", "lambdas"):  # Python callers may pass tuples (PAPER_LAMBDAS is one)
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value has the wrong type, is out of range or inconsistent.

        Types are checked before values (a bool, float or string is not an int), and the size of the
        model the config builds is bounded (:data:`MAX_PARAMETERS`) before anything is allocated.
        """
        check_str("model_type", self.model_type, 64)
        if self.model_type != MODEL_TYPE:
            raise ConfigError(f"model_type must be {MODEL_TYPE!r}, got {describe(self.model_type)}")
        check_str("preset", self.preset, 64)
        for name in ("N", "M", "hyper_channels"):
            check_int(name, getattr(self, name), 4, MAX_CHANNELS)
        if self.N % 2:
            raise ConfigError(f"N must be even (bottleneck blocks use N/2), got {self.N}")
        check_int_list("groups", self.groups, (1, MAX_GROUPS), 1, MAX_CHANNELS)
        if sum(self.groups) != self.M:
            raise ConfigError(f"groups must sum to M={self.M}, got sum({self.groups})={sum(self.groups)}")
        check_int("num_res_blocks", self.num_res_blocks, 0, MAX_RES_BLOCKS)
        check_int_list("context_hidden", self.context_hidden, (2, 2), 1, MAX_CHANNELS)
        check_int("num_qualities", self.num_qualities, 2, 16)  # 4 bits in the bitstream
        if not isinstance(self.lambdas, list) or len(self.lambdas) != self.num_qualities:
            raise ConfigError(f"lambdas must be a list of {self.num_qualities} numbers, got {describe(self.lambdas)}")
        for i, value in enumerate(self.lambdas):
            if not isinstance(value, float) or not (0 < value and math.isfinite(value)):
                raise ConfigError(f"lambdas[{i}] must be a positive finite float, got {describe(value)}")
        if any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ConfigError("lambdas must be strictly ascending (the paper's order: best quality first)")
        for name in ("attention", "intermediate_gains", "finalized"):
            check_bool(name, getattr(self, name))
        estimate = self.estimated_num_parameters()
        if estimate > MAX_PARAMETERS:
            raise ConfigError(
                f"this config builds about {estimate / 1e6:.0f}M parameters, more than the {MAX_PARAMETERS / 1e6:.0f}M "
                f"a codec may have (N={self.N}, M={self.M}, hyper_channels={self.hyper_channels}, "
                f"context_hidden={self.context_hidden}, num_res_blocks={self.num_res_blocks})"
            )

    def estimated_num_parameters(self) -> int:
        """The convolution weights the config builds, counted from the widths alone.

        Used to bound a config's memory before the model exists; the biases, gains and entropy
        models it leaves out add under 2 % (``tiny``) to 0.2 % (``elic``). Only call it on a
        config whose widths passed their own checks.
        """
        N, M, Nh, r, (c1, c2), groups = (
            self.N, self.M, self.hyper_channels, self.num_res_blocks, self.context_hidden, self.groups
        )
        bottleneck = 3.25  # residual bottleneck block of ch channels: ch·ch/2 + 9·(ch/2)² + ch/2·ch = 3.25 ch²
        attention = 6 * bottleneck + 1  # six residual units and a 1×1 convolution
        transform = 75 * N + 50 * N * N + 25 * N * M + 3 * r * bottleneck * N * N  # g_a (g_s is its mirror)
        total = 2 * transform + (2 * attention * (N * N + M * M) if self.attention else 0)
        total += 9 * M * Nh + 50 * Nh * Nh  # h_a
        total += 25 * Nh * N + 37.5 * N * N + 27 * N * N  # h_s
        for k, g in enumerate(groups):
            total += 50 * g * g  # checkerboard context g_sp
            if k:  # channel context g_ch
                total += 25 * sum(groups[:k]) * c1 + 25 * c1 * c2 + 50 * c2 * g
            # parameter aggregation: three 1×1 layers ramping linearly from its input width to 2g, at least 2N wide
            width_in, width_out = 2 * g + (k > 0) * 2 * g + 2 * N, 2 * g
            mid = [max(2 * N, width_in + (width_out - width_in) * i // 3) for i in (1, 2)]
            total += width_in * mid[0] + mid[0] * mid[1] + mid[1] * width_out
        return int(total)

    @classmethod
    def preset_table(cls) -> dict[str, dict[str, Any]]:
        return PRESETS


#: ``elic`` is the paper's ELIC (He et al. 2022, as in CompressAI's ``Elic2022Official``);
#: ``elic-small`` (one residual block per stage, no attention blocks, narrower context and
#: hyperprior) trains on a CPU in hours and stays under 25 MiB with its CDF tables;
#: ``tiny`` is for tests (runs in milliseconds).
PRESETS: dict[str, dict[str, Any]] = {
    "elic": dict(N=192, M=320, groups=[16, 16, 32, 64, 192], num_res_blocks=3, attention=True,
                 hyper_channels=192, context_hidden=[224, 128]),
    "elic-small": dict(N=96, M=192, groups=[16, 16, 32, 64, 64], num_res_blocks=1, attention=False,
                       hyper_channels=64, context_hidden=[64, 48]),
    "tiny": dict(N=16, M=32, groups=[4, 4, 8, 16], num_res_blocks=1, attention=False,
                 hyper_channels=16, context_hidden=[16, 16]),
}
