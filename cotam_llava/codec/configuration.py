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

from ..errors import ConfigError

__all__ = ["CoTAMCodecConfig", "PRESETS", "PAPER_LAMBDAS", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

#: The paper's λ table (appendix A.3), L = D + λ·R with D the MSE of [0, 1] images and
#: R in bits per pixel. Larger λ → lower rate. Quality index q ∈ [0, 9] uses
#: ``PAPER_LAMBDAS[9 - q]``: q = 9 is the best quality (smallest λ).
PAPER_LAMBDAS: tuple[float, ...] = (
    0.00002, 0.00005, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128,
)

MODEL_TYPE = "cotam-elic"


@dataclass
class CoTAMCodecConfig:
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
        self.groups = [int(g) for g in self.groups]
        self.context_hidden = [int(c) for c in self.context_hidden]
        self.lambdas = [float(v) for v in self.lambdas]
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` when a value is out of range or inconsistent."""
        if self.model_type != MODEL_TYPE:
            raise ConfigError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")
        for name in ("N", "M", "hyper_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= 4096:
                raise ConfigError(f"{name} must be an integer in [4, 4096], got {value!r}")
        if self.N % 2:
            raise ConfigError(f"N must be even (bottleneck blocks use N/2), got {self.N}")
        if not self.groups or any(g <= 0 for g in self.groups):
            raise ConfigError(f"groups must be positive integers, got {self.groups}")
        if sum(self.groups) != self.M:
            raise ConfigError(f"groups must sum to M={self.M}, got sum({self.groups})={sum(self.groups)}")
        if not 0 <= self.num_res_blocks <= 16:
            raise ConfigError(f"num_res_blocks must be in [0, 16], got {self.num_res_blocks}")
        if len(self.context_hidden) != 2 or any(c <= 0 for c in self.context_hidden):
            raise ConfigError(f"context_hidden must be two positive widths, got {self.context_hidden}")
        if not 2 <= self.num_qualities <= 16:
            raise ConfigError(f"num_qualities must be in [2, 16] (4 bits in the bitstream), got {self.num_qualities}")
        if len(self.lambdas) != self.num_qualities:
            raise ConfigError(f"lambdas needs {self.num_qualities} values, got {len(self.lambdas)}")
        if any(not (v > 0 and math.isfinite(v)) for v in self.lambdas):
            raise ConfigError(f"lambdas must be positive and finite, got {self.lambdas}")
        if any(b <= a for a, b in zip(self.lambdas, self.lambdas[1:])):
            raise ConfigError("lambdas must be strictly ascending (the paper's order: best quality first)")
        for name in ("attention", "intermediate_gains", "finalized"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ λ per quality
    def lambda_for_quality(self, quality: int) -> float:
        """λ of quality index ``quality`` (0 = lowest rate, ``num_qualities-1`` = best)."""
        self.check_quality(quality)
        return self.lambdas[self.num_qualities - 1 - quality]

    def check_quality(self, quality: int) -> int:
        """Return ``quality`` as an int, or raise :class:`ConfigError` when out of range."""
        if isinstance(quality, bool) or int(quality) != quality or not 0 <= quality < self.num_qualities:
            raise ConfigError(f"quality must be an integer in [0, {self.num_qualities - 1}], got {quality!r}")
        return int(quality)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """Canonical JSON (sorted keys): also what the codec id hashes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoTAMCodecConfig":
        from .._config import strict_from_dict

        return strict_from_dict(cls, data, "codec")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json_string())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "CoTAMCodecConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no {CONFIG_NAME} in {directory}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "CoTAMCodecConfig":
        """Build one of :data:`PRESETS` (``elic``, ``elic-small``, ``tiny``), optionally overriding keys."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        data = {**PRESETS[name], "preset": name, **overrides}
        return cls.from_dict(data)


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
