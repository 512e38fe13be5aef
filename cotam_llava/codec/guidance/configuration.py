"""Configuration of shallow-attention guidance (``GuidanceConfig``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._config import DEFAULT_GUIDANCE_STEP
from ...errors import ConfigError

__all__ = ["GuidanceConfig", "GUIDANCE_CONFIG_NAME", "DEFAULT_GUIDANCE_STEP", "ALLOCATION_RULES"]

GUIDANCE_CONFIG_NAME = "guidance_config.json"

#: How a guidance model turns what it sees into a quality map (``GuidanceConfig.allocation``).
ALLOCATION_RULES = ("paper", "host")


@dataclass
class GuidanceConfig:
    """How guidance turns an image into a quality map.

    Args:
        num_layers: K, the first ViT layers whose attention is averaged (paper: 3).
        grid: G, the pooled map is G×G (paper: 8, ≤ 128 bits with 3 levels).
        num_levels: L quantization levels (paper: 3 = decrease / keep / increase; 5 tried).
        k: threshold spread μ ± kσ (paper: 0.75; stable for k ∈ [0.45, 0.85]).
        step: quality levels a guidance level moves the base quality (see the README's sweep).
        image_mean, image_std: the encoder's input normalisation (None: its family's default).
        image_size: side of the square ViT input (None: the encoder config's ``image_size``);
            a multiple of the patch size.
        allocation: ``"paper"``: μ ± kσ on shallow attention (§3.2; K, L, k, step apply); ``"host"``: the host
            encoder's own final-token error under the base level's rate (:mod:`.host`; needs the whole encoder at
            the edge; grid, spread and the rate settings apply).
        spread: host maps pick each cell's level from base − spread … base + spread.
        rate_tolerance: host maps make files at most this share larger than the uniform file (else uniform).
        rate_rounds: host maps' real encodes to meet the rate (the budget shrinks by each overshoot).
        verify: host maps are judged on real files: each candidate map's file is decoded and the host's error on it
            compared with the uniform file's; the least wins, and the uniform file wins ties (False: the first map
            that meets the rate is used unjudged, the rule before 2026-12-07).
        candidates: with ``verify``, how many maps are tried: the plain allocation, then ones with a growing
            penalty on every changed cell (fewer, surer changes; ``allocation.change_penalties``).
    """

    num_layers: int = 3
    grid: int = 8
    num_levels: int = 3
    k: float = 0.75
    step: int = DEFAULT_GUIDANCE_STEP
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    image_size: int | None = None
    allocation: str = "paper"
    spread: int = 1
    rate_tolerance: float = 0.005
    rate_rounds: int = 3
    verify: bool = True
    candidates: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.num_layers <= 64:
            raise ConfigError(f"num_layers must be in [1, 64], got {self.num_layers}")
        if not 1 <= self.grid <= 255:
            raise ConfigError(f"grid must be in [1, 255], got {self.grid}")
        if not 2 <= self.num_levels <= 16:
            raise ConfigError(f"num_levels must be in [2, 16], got {self.num_levels}")
        if not 0 < self.k <= 5:
            raise ConfigError(f"k must be in (0, 5], got {self.k}")
        if not 0 <= self.step <= 9:
            raise ConfigError(f"step must be in [0, 9], got {self.step}")
        if self.image_size is not None and not 14 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must be in [14, 4096], got {self.image_size}")
        if self.allocation not in ALLOCATION_RULES:
            raise ConfigError(f"allocation must be one of {', '.join(ALLOCATION_RULES)}, got {self.allocation!r}")
        if not 1 <= self.spread <= 4:
            raise ConfigError(f"spread must be in [1, 4], got {self.spread}")
        if not 0 <= self.rate_tolerance <= 0.5:
            raise ConfigError(f"rate_tolerance must be in [0, 0.5], got {self.rate_tolerance}")
        if not 1 <= self.rate_rounds <= 10:
            raise ConfigError(f"rate_rounds must be in [1, 10], got {self.rate_rounds}")
        if not 1 <= self.candidates <= 8:
            raise ConfigError(f"candidates must be in [1, 8], got {self.candidates}")
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            if v is not None and (len(v) != 3 or (name == "image_std" and min(v) <= 0)):
                raise ConfigError(f"{name} must be three numbers (std > 0), got {v}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GuidanceConfig":
        from ..._config import strict_from_dict

        return strict_from_dict(cls, data, "guidance")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / GUIDANCE_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "GuidanceConfig":
        path = Path(directory) / GUIDANCE_CONFIG_NAME
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc


def judged_options(candidates: int | None) -> dict[str, Any]:
    """:class:`GuidanceConfig` keywords for a command line's count of judged candidate maps (host rule): 0 turns
    the judging off (the first map, unjudged), N ≥ 1 judges N maps, None keeps the defaults."""
    if candidates is None:
        return {}
    if candidates < 0:
        raise ConfigError(f"the number of candidate maps must be ≥ 0 (0: unjudged), got {candidates}")
    return {"verify": candidates > 0, "candidates": max(candidates, 1)}

