"""The test metrics' 95% intervals: Wilson for proportions, the score form of Hanley and
McNeil's variance for AUC, and macro averages from their classes."""

from __future__ import annotations

import math

import pytest

from components.report.evaluation import _binary_class_rates, _class_counts
from components.report.intervals import (
    Z_95,
    auc_entry,
    auc_interval,
    macro_entry,
    proportion_entry,
    wilson_interval,
)


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil (1982), equation 2, as published (Q1 and Q2 written out)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (positives - 1) * (q1 - auc * auc)
                      + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives))


def test_wilson_interval():
    # Reference values (Wilson, 1927; as statsmodels' proportion_confint(method="wilson")).
    assert wilson_interval(27, 30) == pytest.approx((0.7438, 0.9654), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(490, 500)[1] - wilson_interval(490, 500)[0] < 0.04


@pytest.mark.parametrize("auc, positives, negatives", [(0.8, 1000, 1000), (0.93, 2000, 4000)])
def test_the_auc_interval_is_hanley_mcneil_on_many_photos(auc, positives, negatives):
    # With many photos the score interval meets the published Wald one, auc +- z * SE.
    se = hanley_mcneil_se(auc, positives, negatives)
    low, high = auc_interval(auc, positives, negatives)
    assert low == pytest.approx(auc - Z_95 * se, abs=2e-3)
    assert high == pytest.approx(auc + Z_95 * se, abs=2e-3)


def test_the_auc_interval_on_few_photos_stays_honest():
    # Each bound solves (auc - theta)^2 = z^2 var(theta), var written in theta.
    low, high = auc_interval(0.9, 5, 25)
    for theta in (low, high):
        assert (0.9 - theta) ** 2 == pytest.approx((Z_95 * hanley_mcneil_se(theta, 5, 25)) ** 2,
                                                   rel=1e-6)
    # A perfect AUC on 5 photos of the class is not a certainty (the Wald form says [1, 1]).
    low, high = auc_interval(1.0, 5, 25)
    assert high == 1.0 and 0.5 < low < 0.9
    assert auc_interval(1.0, 50, 250)[0] > low  # more photos, narrower
    assert auc_interval(0.0, 5, 25)[0] == 0.0
    a, b = auc_interval(0.5, 10, 10)
    assert a == pytest.approx(1 - b) and a < 0.5 < b


def test_entries_name_their_sample_and_refuse_to_guess():
    assert proportion_entry(0.9, 30) == {"low": 0.7438, "high": 0.9654, "n": 30}
    assert proportion_entry(None, 30) is None and proportion_entry(0.9, 0) is None
    assert auc_entry(0.9, 5, 25)["n"] == 30 and auc_entry(0.9, 5, 25)["positives"] == 5
    assert auc_entry(0.9, 5, 0) is None  # no photo of the other classes: no AUC to bound
    recalls = [proportion_entry(r, 5) for r in (1.0, 0.8, 0.6)]
    macro = macro_entry(0.8, recalls, 15)
    assert macro["n"] == 15 and macro["low"] < 0.8 < macro["high"]
    # The average of three classes is surer than any one of them.
    assert macro["high"] - macro["low"] < min(e["high"] - e["low"] for e in recalls)
    assert macro_entry(0.8, [*recalls[:2], None], 15) is None


def test_binary_per_class_rates_and_counts_from_the_confusion_counts():
    matrix = [[6, 4], [0, 10]]  # [[tn, fp], [fn, tp]]
    assert _class_counts(matrix, 1) == (6, 4, 0, 10)
    assert _class_counts(matrix, 0) == (10, 0, 4, 6)  # class 0 as the positive class
    assert _binary_class_rates(matrix, 1) == (pytest.approx(10 / 14), 1.0)
    assert _binary_class_rates(matrix, 0) == (1.0, 0.6)
    assert _binary_class_rates([[0, 0], [0, 5]], 0) == (None, None)
