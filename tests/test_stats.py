"""Student-t summaries and the paired verdict, checked by hand and by coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iiotbed.platform.stats import Verdict, compare_paired, summarize


def test_summary_matches_hand_computation() -> None:
    # mean 3; sample sd sqrt(10/4) = 1.5811; t(0.975, 4) = 2.7764; half = 2.7764 * 1.5811 / sqrt(5)
    s = summarize([1, 2, 3, 4, 5])
    assert s.mean == pytest.approx(3.0)
    assert s.sd == pytest.approx(math.sqrt(2.5))
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert s.ci95 == pytest.approx((3 - half, 3 + half), rel=1e-6)
    assert s.n == 5


def test_summary_skips_nan_and_handles_tiny_samples() -> None:
    s = summarize([2.0, math.nan, 4.0])
    assert (s.mean, s.n, s.undefined) == (3.0, 2, 1)
    one = summarize([7.0])
    assert one.mean == 7.0 and math.isnan(one.ci95[0]) and math.isnan(one.ci95[1])
    none = summarize([math.nan])
    assert math.isnan(none.mean) and none.n == 0


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    # 2000 intervals of 10 normal draws: coverage ~ Binomial(2000, 0.95) -> sd 0.49 %;
    # accept 93.5 % .. 96.5 % (3 sd).
    rng = np.random.default_rng(12345)
    hits = 0
    trials = 2000
    for _ in range(trials):
        lo, hi = summarize(list(rng.normal(10.0, 3.0, size=10))).ci95
        hits += lo <= 10.0 <= hi
    assert 0.935 <= hits / trials <= 0.965


def test_verdict_met_only_when_the_lower_bound_clears_the_goal() -> None:
    base = [100.0, 110.0, 90.0, 105.0, 95.0]
    up = [b * r for b, r in zip(base, [1.30, 1.31, 1.29, 1.30, 1.32], strict=True)]
    c = compare_paired("x", base, up, 0.20)
    assert c.verdict is Verdict.MET
    assert c.improvement.ci95[0] >= 0.20
    assert c.improvement.mean == pytest.approx(0.304, abs=1e-9)


def test_verdict_not_met_when_the_upper_bound_is_below_the_goal() -> None:
    base = [100.0, 110.0, 90.0, 105.0, 95.0]
    up = [b * r for b, r in zip(base, [1.10, 1.11, 1.09, 1.10, 1.12], strict=True)]
    c = compare_paired("x", base, up, 0.20)
    assert c.verdict is Verdict.NOT_MET
    assert c.improvement.ci95[1] < 0.20


def test_verdict_inconclusive_when_the_interval_straddles_the_goal() -> None:
    base = [100.0, 100.0, 100.0, 100.0]
    up = [110.0, 130.0, 115.0, 128.0]  # ratios 0.10, 0.30, 0.15, 0.28: mean 0.2075, wide
    c = compare_paired("x", base, up, 0.20)
    assert c.improvement.ci95[0] < 0.20 < c.improvement.ci95[1]
    assert c.verdict is Verdict.INCONCLUSIVE


def test_lower_is_better_metrics_count_a_drop_as_improvement() -> None:
    c = compare_paired("energy", [10.0, 10.0, 10.0], [7.0, 7.0, 7.0], 0.20, higher_is_better=False)
    assert c.improvement.mean == pytest.approx(0.30)
    assert c.improvement.sd == 0.0
    assert c.verdict is Verdict.MET


def test_pairing_is_what_makes_the_interval_tight() -> None:
    # Replications vary a lot between seeds, but the upgrade is +25 % within every pair:
    # the paired interval is narrow although each side's own interval is wide.
    base = [50.0, 150.0, 80.0, 120.0, 100.0, 60.0]
    up = [1.25 * b for b in base]
    c = compare_paired("x", base, up, 0.20)
    assert c.baseline.half_width > 20
    assert c.improvement.half_width < 1e-9
    assert c.verdict is Verdict.MET


def test_unpaired_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="as many baseline as upgrade"):
        compare_paired("x", [1.0, 2.0], [1.0], 0.2)


def test_zero_baseline_makes_the_pair_undefined() -> None:
    c = compare_paired("x", [0.0, 10.0, 10.0], [5.0, 13.0, 13.0], 0.2)
    assert math.isnan(c.ratios[0])
    assert c.improvement.n == 2 and c.improvement.undefined == 1
