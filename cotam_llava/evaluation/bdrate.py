"""Bjøntegaard delta rate through the ``bjontegaard`` package (pchip interpolation).

Real RD curves are not always monotone (a codec's quality knob can give a point
that is both larger and worse). Interpolating ``log(rate)`` over quality needs a
strictly increasing curve, so :func:`bd_rate` first keeps each curve's Pareto
front — the points not dominated by a cheaper-and-better one — and says how many
it dropped. With fewer than two points left, or no quality overlap, the result is
NaN with the reason, never an exception.

The same functions serve MLLM task scores against bpp (paper Fig. 7, Table 2): a score
is a quality where higher is better, like PSNR. Score curves are often flat or noisy
(an accuracy that saturates, or dips by one question between two rates): a point whose
score does not strictly beat every cheaper point is dropped, and the note says so.
:func:`bd_quality` is the other Bjøntegaard number — the mean quality (score) gain at
equal rate, the paper's "BD-score" (Fig. 11) — with the same Pareto handling.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["BDResult", "bd_rate", "bd_quality", "pareto_front"]


@dataclass
class BDResult:
    """BD-rate of a test curve against an anchor.

    Attributes:
        value: percent rate change at equal quality (negative: the test saves bits); NaN if undefined.
        note: why it is NaN, or which points were dropped as dominated ('' if none).
    """

    value: float
    note: str = ""


def pareto_front(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Points sorted by rate whose quality strictly beats every cheaper point.

    Returns:
        (rates, quality, number of dropped points).
    """
    r = np.asarray(rates, dtype=float)
    d = np.asarray(quality, dtype=float)
    keep = np.isfinite(r) & np.isfinite(d) & (r > 0)
    r, d = r[keep], d[keep]
    order = np.lexsort((-d, r))
    front_r, front_d, best = [], [], -math.inf
    for i in order:
        if d[i] > best:
            front_r.append(r[i])
            front_d.append(d[i])
            best = d[i]
    dropped = len(rates) - len(front_r)
    return np.array(front_r), np.array(front_d), dropped


def _fronts(anchor_rates, anchor_quality, test_rates, test_quality):
    ar, ad, a_drop = pareto_front(anchor_rates, anchor_quality)
    tr, td, t_drop = pareto_front(test_rates, test_quality)
    notes = []
    if a_drop:
        notes.append(f"anchor: {a_drop} dominated point(s) dropped")
    if t_drop:
        notes.append(f"test: {t_drop} dominated point(s) dropped")
    return ar, ad, tr, td, notes


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> BDResult:
    """BD-rate (percent) of the test curve against the anchor over their common quality range."""
    import bjontegaard

    ar, ad, tr, td, notes = _fronts(anchor_rates, anchor_quality, test_rates, test_quality)
    if len(ar) < 2 or len(tr) < 2:
        return BDResult(math.nan, "; ".join(notes + ["fewer than 2 usable points"]))
    lo, hi = max(ad.min(), td.min()), min(ad.max(), td.max())
    if lo >= hi:
        return BDResult(math.nan, "; ".join(notes + ["quality ranges do not overlap"]))
    with warnings.catch_warnings():  # the package warns on small overlaps; we report it in the note
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ar, ad, tr, td, method="pchip", require_matching_points=False, min_overlap=0.0)
    overlap = (hi - lo) / max(ad.max() - ad.min(), td.max() - td.min())
    if overlap < 0.5:
        notes.append(f"only {overlap:.0%} quality overlap")
    return BDResult(float(value), "; ".join(notes))


def bd_quality(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> BDResult:
    """Mean quality (PSNR, task score) difference at equal rate, test − anchor, over the common log-rate range.

    Positive: the test curve scores higher at the same bits. Same Pareto handling and NaN rules as :func:`bd_rate`.
    """
    import bjontegaard

    ar, ad, tr, td, notes = _fronts(anchor_rates, anchor_quality, test_rates, test_quality)
    if len(ar) < 2 or len(tr) < 2:
        return BDResult(math.nan, "; ".join(notes + ["fewer than 2 usable points"]))
    lo, hi = max(ar.min(), tr.min()), min(ar.max(), tr.max())
    if lo >= hi:
        return BDResult(math.nan, "; ".join(notes + ["rate ranges do not overlap"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_psnr(ar, ad, tr, td, method="pchip", require_matching_points=False, min_overlap=0.0)
    overlap = (math.log(hi) - math.log(lo)) / max(math.log(ar.max() / ar.min()), math.log(tr.max() / tr.min()))
    if overlap < 0.5:
        notes.append(f"only {overlap:.0%} rate overlap")
    return BDResult(float(value), "; ".join(notes))
