"""Strict construction of the package's dataclass configs from JSON objects."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


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
