"""95% intervals for the test metrics, from the counts they stand on.

Proportions (accuracy, top-k accuracy, precision, recall) get Wilson's score interval. AUC
gets the score-form interval of Hanley and McNeil's variance (Newcombe's method), which, like
Wilson's, stays inside [0, 1] and does not collapse to a point at an AUC of 1.0 on few photos.
A macro average gets a normal interval whose variance is the classes' variances averaged as
if the classes were independent (each class's variance read back from its own interval).
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
_BISECTIONS = 60


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default).

    Args:
      successes: e.g. the correctly classified test photos.
      n: the trials (test photos); > 0.
      z: the normal quantile of the confidence level.

    Returns:
      (low, high), within [0, 1].
    """
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def _auc_variance(theta: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) variance of an AUC of theta, written in theta alone."""
    spread = (1 + (positives - 1) * (1 - theta) / (2 - theta)
              + (negatives - 1) * theta / (1 + theta))
    return theta * (1 - theta) * spread / (positives * negatives)


def auc_interval(auc: float, positives: int, negatives: int,
                 z: float = Z_95) -> tuple[float, float]:
    """The score interval of an AUC: the thetas with (auc - theta)^2 <= z^2 var(theta).

    Args:
      auc: the measured AUC, in [0, 1].
      positives: photos of the class.
      negatives: photos of the other classes.
      z: the normal quantile of the confidence level.

    Returns:
      (low, high), within [0, 1].
    """
    def outside(theta: float) -> bool:
        return (auc - theta) ** 2 > z * z * _auc_variance(theta, positives, negatives)

    bounds = []
    for end in (0.0, 1.0):
        # Between auc (inside) and an end, the boundary lies where `outside` turns true.
        inside, out = auc, end
        if not outside(end):
            bounds.append(end)
            continue
        for _ in range(_BISECTIONS):
            middle = (inside + out) / 2
            inside, out = (inside, middle) if outside(middle) else (middle, out)
        bounds.append(inside)
    return bounds[0], bounds[1]


def proportion_entry(value: float | None, n: int | None) -> dict[str, float | int] | None:
    """A proportion's interval entry: {"low", "high", "n"} (rounded to 4 places).

    Args:
      value: the proportion (e.g. accuracy), or None.
      n: the photos it stands on (its denominator), or None.

    Returns:
      The entry, or None without a value or photos.
    """
    if value is None or not n:
        return None
    low, high = wilson_interval(round(value * n), n)
    return {"low": round(low, 4), "high": round(high, 4), "n": n}


def auc_entry(value: float | None, positives: int | None,
              negatives: int | None) -> dict[str, float | int] | None:
    """An AUC's interval entry: {"low", "high", "n", "positives"}.

    Args:
      value: the AUC, or None.
      positives: photos of the class, or None.
      negatives: photos of the other classes, or None.

    Returns:
      The entry, or None without a value or with no photo on either side.
    """
    if value is None or not positives or not negatives:
        return None
    low, high = auc_interval(value, positives, negatives)
    return {"low": round(low, 4), "high": round(high, 4), "n": positives + negatives,
            "positives": positives}


def macro_entry(value: float | None, entries: list[dict | None],
                n: int | None) -> dict[str, float | int] | None:
    """A macro average's interval entry, from its classes' entries.

    Args:
      value: the macro average, or None.
      entries: each class's interval entry; a None (a class with no photos for the metric)
        leaves the average without an interval.
      n: the test photos.

    Returns:
      {"low", "high", "n"}, or None.
    """
    if value is None or not n or not entries or any(e is None for e in entries):
        return None
    # Each class's standard error, as its (asymmetric) interval's half width over z.
    variance = sum(((e["high"] - e["low"]) / (2 * Z_95)) ** 2 for e in entries)
    half = Z_95 * math.sqrt(variance) / len(entries)
    return {"low": round(max(0.0, value - half), 4), "high": round(min(1.0, value + half), 4),
            "n": n}
