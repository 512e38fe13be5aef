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
