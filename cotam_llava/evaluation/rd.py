"""One rate-distortion data model for every evaluation: coded images, curves, BD tables, CSV.

* :class:`CodedImage` — one image coded by one codec at one quality, with its real size (bytes, bpp); the
  codec bench's :class:`~cotam_llava.evaluation.bench.BenchRow` and the proxies' rows add their metrics to it.
* :func:`curves` — points grouped into one (rates, values) curve per codec, for any rate and metric field.
* :func:`bd_against` — BD-rate of every curve against an anchor curve (pchip over the Pareto fronts,
  :mod:`~cotam_llava.evaluation.bdrate`).
* :func:`write_csv` — records as a CSV (header from the first record).

The codec bench, the proxies (and through them the adapter study) and the lmms-eval task sweep (per task, rate
= bpp or bits per frame, value = the task's score; BD-rate and BD-score) build their curves with :func:`curves`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .bdrate import BDResult, bd_rate

__all__ = ["CodedImage", "Curve", "curves", "bd_against", "write_csv"]

#: (rates, values) of one codec, in the order the points came.
Curve = tuple[list[float], list[float]]


@dataclass
class CodedImage:
    """One image coded by one codec at one quality.

    Attributes:
        codec, quality: the point.
        image: the image's name.
        width, height: its size in pixels.
        bytes: the real file size; bpp = bytes × 8 / (width × height).
    """

    codec: str
    quality: int
    image: str
    width: int
    height: int
    bytes: int
    bpp: float


def curves(
    points: Iterable[Any],
    value: str,
    rate: str = "bpp",
    where: Callable[[Any], bool] | None = None,
) -> dict[str, Curve]:
    """One (rates, values) curve per ``point.codec`` from the attributes ``rate`` and ``value`` of each point
    (those ``where`` accepts)."""
    out: dict[str, Curve] = {}
    for p in points:
        if where is not None and not where(p):
            continue
        rates, values = out.setdefault(p.codec, ([], []))
        rates.append(getattr(p, rate))
        values.append(getattr(p, value))
    return out


def bd_against(by_codec: Mapping[str, Curve], anchor: str) -> dict[str, BDResult]:
    """BD-rate (%) of every curve but the anchor's against it; empty when the anchor has no curve."""
    if anchor not in by_codec:
        return {}
    ar, av = by_codec[anchor]
    return {name: bd_rate(ar, av, r, v) for name, (r, v) in by_codec.items() if name != anchor}


def write_csv(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """A CSV with the keys of the first record as header (an empty file when there are none)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        if records:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    return path
