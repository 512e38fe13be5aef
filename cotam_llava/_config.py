"""Strict construction of the package's dataclass configs from JSON objects, and the defaults that light modules
(the CLI's argument parsers) need without importing torch."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

#: Quality levels a guidance level moves the base quality. Chosen by measurement (eval/guidance_study.py on the
#: shipped elic-small, 6 Kodak photos, real DINOv2-S guidance): step 1 has the best DINOv2 token-cosine BD-rate
#: against no guidance (−3.9 %; step 2 +8.3 %, step 3 +19.8 %) while already adding +0.73 dB inside the
#: "increase" regions at equal rate. Re-run the study when the codec is retrained.
DEFAULT_GUIDANCE_STEP = 1


def strict_from_dict(cls: type[T], data: Any, what: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} config must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid {what} config: {exc}") from exc
