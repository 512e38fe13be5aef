"""BD-rate against values computed by hand on synthetic curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cotam_llava.evaluation.bdrate import bd_rate, pareto_front

RATES = np.array([0.25, 0.5, 1.0, 2.0])
PSNR = np.array([28.0, 31.0, 34.0, 37.0])


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.25])
def test_constant_rate_ratio_gives_that_ratio(factor):
    # Same quality at factor × the rate everywhere → BD-rate = (factor − 1) · 100 exactly.
    assert bd_rate(RATES, PSNR, RATES * factor, PSNR).value == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_quality_shift_on_log_linear_curve():
    # PSNR = 28 + 3·log2(rate/0.25): +1.5 dB at equal rate = rate × 2^(−0.5) at equal PSNR.
    res = bd_rate(RATES, PSNR, RATES, PSNR + 1.5)
    assert res.value == pytest.approx((2 ** -0.5 - 1) * 100, abs=0.5)


def test_dominated_points_are_dropped_and_reported():
    front_r, front_d, dropped = pareto_front([0.3, 0.2, 0.6, 1.1, 0.7], [29, 27, 33, 35, 32])
    assert dropped == 1 and list(front_r) == [0.2, 0.3, 0.6, 1.1]
    res = bd_rate(RATES, PSNR, [0.3, 0.2, 0.6, 1.1, 0.7], [29, 27, 33, 35, 32])
    assert math.isfinite(res.value) and "1 dominated" in res.note


def test_no_overlap_is_nan_with_reason():
    res = bd_rate(RATES, PSNR, RATES, PSNR + 20)
    assert math.isnan(res.value) and "overlap" in res.note
    assert math.isnan(bd_rate(RATES, PSNR, [1.0], [30.0]).value)


# --------------------------------------------------------------------------- MLLM task scores against bpp
# Parallel curves in log-rate: score = 40 + 10·log2(bpp / 0.1) for the anchor. A test curve that reaches every
# score at k × the anchor's rate has BD-rate (k − 1)·100 and BD-score −10·log2(k) exactly (pchip reproduces
# straight lines, and the shift is the same everywhere).
BPP = np.array([0.1, 0.2, 0.4, 0.8])
SCORE = 40 + 10 * np.log2(BPP / 0.1)  # 40, 50, 60, 70


@pytest.mark.parametrize("k", [0.5, 0.8, 1.25])
def test_score_curves_parallel_in_log_rate(k):
    from cotam_llava.evaluation.bdrate import bd_quality

    assert bd_rate(BPP, SCORE, BPP * k, SCORE).value == pytest.approx((k - 1) * 100, abs=1e-9)
    assert bd_quality(BPP, SCORE, BPP * k, SCORE).value == pytest.approx(-10 * math.log2(k), abs=1e-9)
    # the same curves sampled at other points: still exact
    other = np.array([0.12, 0.3, 0.5, 0.7])
    assert bd_rate(BPP, SCORE, other * k, 40 + 10 * np.log2(other / 0.1)).value == pytest.approx((k - 1) * 100, abs=1e-6)


def test_score_curve_on_another_scale_and_quality_shift():
    from cotam_llava.evaluation.bdrate import bd_quality

    mme = 1000 + 150 * np.log2(BPP / 0.1)  # MME-like scores: scale does not matter for BD-rate
    assert bd_rate(BPP, mme, BPP * 0.64, mme).value == pytest.approx(-36.0, abs=1e-9)
    # +15 points at equal rate on a 150-points-per-doubling line = the rate divided by 2^(15/150)
    assert bd_rate(BPP, mme, BPP, mme + 15).value == pytest.approx((2 ** -0.1 - 1) * 100, abs=1e-6)
    assert bd_quality(BPP, mme, BPP, mme + 15).value == pytest.approx(15.0, abs=1e-9)


def test_non_monotone_score_curve_uses_its_pareto_front():
    from cotam_llava.evaluation.bdrate import bd_quality

    # a dip (0.24 bpp scores less than 0.16) and a plateau (0.64 scores no more than 0.32): both dropped, and
    # what is left lies on the parallel line at 0.8 × the anchor's rate → exactly −20 %.
    rates = [0.08, 0.16, 0.24, 0.32, 0.64]
    scores = [40, 50, 47, 60, 60]
    res = bd_rate(BPP, SCORE, rates, scores)
    assert res.value == pytest.approx(-20.0, abs=1e-9)
    assert "test: 2 dominated point(s) dropped" in res.note
    assert bd_quality(BPP, SCORE, rates, scores).value == pytest.approx(10 * math.log2(1.25), abs=1e-9)
    # an accuracy flat at 0 (an untrained model) has no usable curve: NaN with the reason, no exception
    flat = bd_rate(BPP, [0, 0, 0, 0], BPP, [0, 0, 0, 0])
    assert math.isnan(flat.value) and "fewer than 2 usable points" in flat.note
    assert math.isnan(bd_quality(BPP, SCORE, BPP * 100, SCORE).value)  # no rate overlap
