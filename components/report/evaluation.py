"""The Evaluator's output (TFMA) as the report shows it: overall and per-class metrics, the
confusion matrix, the gate's thresholds, the baseline and why a model was not blessed.

Per class: with more than two classes the eval config binarizes AUC, precision and recall per
class id (TFMA's one-vs-rest "classId:<i>" sub keys). With two, the model outputs the positive
class's probability and TFMA's binary metrics are the positive class's; the negative class's
precision and recall follow from TFMA's confusion counts at 0.5, and its one-vs-rest AUC
equals the positive class's.
"""

from __future__ import annotations

import math
import re
from typing import Any

from components.report.intervals import auc_entry, macro_entry, proportion_entry

# The threshold of the precision and recall TFMA reports (its default) and of the confusion
# counts the eval config asks for beside them (COUNTS_AT_THRESHOLD).
THRESHOLD = 0.5
COUNTS_AT_THRESHOLD = f'{{"thresholds": [{THRESHOLD}]}}'
# The overall metrics, in the order shown. Two classes: the positive class's AUC, precision and
# recall. More: top-k accuracy and the one-vs-rest metrics' macro averages, named as such; an
# overall precision, recall or AUC is not defined there.
OVERALL = ("accuracy", "top_k_accuracy", "auc", "precision", "recall", "macro_auc",
           "macro_precision", "macro_recall", "example_count")
_TOP_K = re.compile(r"top_(\d+)_accuracy")


def _number(value: Any) -> float | None:
    """A TFMA metric value ({"doubleValue": x}, x maybe "NaN") as a float; None if not finite."""
    if isinstance(value, dict) and "doubleValue" in value:
        value = float(value["doubleValue"])
        return value if math.isfinite(value) else None
    return None


def _clean_name(name: str) -> str:
    """A TFMA metric name as the report shows it: "macro_average: true\\n_auc" -> macro_auc,
    "top_3_accuracy" -> top_k_accuracy (k is in "top_k")."""
    prefix, _, base = name.rpartition("\n_")
    if _TOP_K.fullmatch(base):
        return "top_k_accuracy"
    return f"macro_{base}" if "macro_average" in prefix else base


def accuracy_interval(accuracy: float | None, n: int | None) -> list[float] | None:
    """accuracy's 95% Wilson interval on n test photos, rounded to 4 places; None without."""
    entry = proportion_entry(accuracy, n)
    return None if entry is None else [entry["low"], entry["high"]]


def small_split_warning(accuracy: float | None, n: int | None,
                        min_accuracy: float | None) -> str | None:
    """One line when the test split is too small for the gate to tell the model's accuracy
    from --min-accuracy: the threshold lies inside the accuracy's 95% interval.

    Args:
      accuracy: the test accuracy.
      n: the test photos.
      min_accuracy: the gate's threshold.

    Returns:
      The warning, or None.
    """
    interval = accuracy_interval(accuracy, n)
    if interval is None or min_accuracy is None or not interval[0] <= min_accuracy <= interval[1]:
        return None
    return (f"the test split is too small for the gate to tell this model from --min-accuracy "
            f"{min_accuracy}: {round(accuracy * n)} of {n} photos right, 95% interval "
            f"{interval[0]:.3f}-{interval[1]:.3f}; more test photos (--validation-test-fraction, "
            "a bigger validation folder) narrow it")


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def read_evaluation(evaluation_uri: str, classes: list[str]) -> dict[str, Any]:
    """The report's numbers from a ModelEvaluation artifact.

    Args:
      evaluation_uri: the Evaluator's evaluation artifact uri.
      classes: the class names by index.

    Returns:
      {"overall": {the OVERALL metrics TFMA produced, accuracy_diff (with a baseline)},
       "top_k" (k of top_k_accuracy, or None), "accuracy_interval" ([low, high], 95% Wilson),
       "warning" (small_split_warning), "averaging" (what the overall metrics are),
       "per_class": [{"class", "count", "precision", "recall", "auc"}],
       "confusion_matrix": [[count]] (true class by row), "gate": {"min_accuracy",
       "max_accuracy_drop"}, "validation_ok": bool | None, "failures": [str]}; None for a
      number TFMA did not produce (e.g. precision with no positive prediction).
    """
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri)
    overall_raw: dict[str, Any] = {}
    by_class: dict[int, dict[str, Any]] = {}
    counts: dict[str, float | None] = {}
    for slice_key, by_output in result.slicing_metrics:
        sub_keys = next(iter(by_output.values()), {})
        if slice_key:
            name = dict(slice_key).get(next(iter(dict(slice_key))))
            count = _number(sub_keys.get("", {}).get("example_count"))
            counts[str(name)] = None if count is None else int(count)
            continue
        for sub_key, metrics in sub_keys.items():
            if not sub_key:
                overall_raw = metrics
            elif sub_key.startswith("classId:"):
                by_class[int(sub_key.split(":", 1)[1])] = metrics
    overall = {_clean_name(k): _number(v) for k, v in overall_raw.items()
               if isinstance(v, dict) and "doubleValue" in v}
    top_k = next((int(m.group(1)) for k in overall_raw if (m := _TOP_K.fullmatch(
        k.rpartition("\n_")[2]))), None)
    binary = len(classes) == 2
    matrix = (_binary_confusion(overall_raw) if binary
              else _multiclass_confusion(result.plots, len(classes)))
    if overall.get("example_count") is not None:
        overall["example_count"] = int(overall["example_count"])
    count, gate = overall.get("example_count"), gate_thresholds(result.config)
    per_class = []
    for i, name in enumerate(classes):
        if binary:
            precision, recall = _binary_class_rates(matrix, i)
            auc = overall.get("auc")
            at_half = _class_counts(matrix, i)
        else:
            metrics = by_class.get(i, {})
            precision, recall, auc = (_number(metrics.get(k))
                                       for k in ("precision", "recall", "auc"))
            at_half = _counts_at_half(metrics)
        per_class.append({"class": name, "count": counts.get(name), "precision": precision,
                          "recall": recall, "auc": auc,
                          "intervals": _class_intervals(precision, recall, auc, at_half,
                                                        counts.get(name), count)})
    if binary and per_class:
        # One AUC, the positive class's: both rows show its interval.
        per_class[0]["intervals"]["auc"] = per_class[1]["intervals"]["auc"]
    intervals = _overall_intervals(overall, per_class, count, binary)
    return {"overall": {k: overall.get(k) for k in (*OVERALL, "accuracy_diff") if k in overall},
            "top_k": top_k,
            "accuracy_interval": accuracy_interval(overall.get("accuracy"), count),
            "intervals": intervals,
            "warning": small_split_warning(overall.get("accuracy"), count,
                                           gate["min_accuracy"]),
            "averaging": (f"AUC, precision and recall of the positive class, {classes[1]!r}, "
                          f"precision and recall at {THRESHOLD}" if binary else
                          "no overall precision, recall or AUC for more than two classes: "
                          "macro_auc, macro_precision and macro_recall are the one-vs-rest "
                          f"metrics' plain averages over the {len(classes)} classes"
                          + (f"; top-{top_k} accuracy counts a photo right when its class is "
                             f"among the {top_k} likeliest" if top_k else "")),
            "per_class": per_class, "confusion_matrix": matrix, "gate": gate,
            **validation(evaluation_uri, count)}


def _class_intervals(precision: float | None, recall: float | None, auc: float | None,
                     at_half: tuple[int, int, int, int] | None, class_count: int | None,
                     count: int | None) -> dict[str, dict | None]:
    """A class's 95% intervals: precision on the photos predicted as it (at 0.5), recall on its
    photos, one-vs-rest AUC on its photos against the rest."""
    predicted = None if at_half is None else at_half[1] + at_half[3]
    negatives = None if class_count is None or count is None else count - class_count
    return {"precision": proportion_entry(precision, predicted),
            "recall": proportion_entry(recall, class_count),
            "auc": auc_entry(auc, class_count, negatives)}


def _overall_intervals(overall: dict[str, Any], per_class: list[dict[str, Any]],
                       count: int | None, binary: bool) -> dict[str, dict | None]:
    """Each overall metric's 95% interval entry ({"low", "high", "n"}), by metric name."""
    intervals = {k: proportion_entry(overall.get(k), count)
                 for k in ("accuracy", "top_k_accuracy") if k in overall}
    for metric in ("precision", "recall", "auc"):
        if binary and metric in overall:
            intervals[metric] = per_class[1]["intervals"][metric]
        if f"macro_{metric}" in overall:
            intervals[f"macro_{metric}"] = macro_entry(
                overall[f"macro_{metric}"], [r["intervals"][metric] for r in per_class], count)
    return intervals


def _counts_at_half(metrics: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """(tn, fp, fn, tp) at 0.5 from TFMA's ConfusionMatrixAtThresholds, if it ran."""
    matrices = (metrics.get("confusion_matrix_at_thresholds", {})
                .get("confusionMatrixAtThresholds", {}).get("matrices", []))
    for m in matrices:
        if math.isclose(m.get("threshold", 0.0), THRESHOLD):
            # proto3 JSON leaves out zero counts.
            tn, fp, fn, tp = (int(round(m.get(k, 0.0))) for k in (
                "trueNegatives", "falsePositives", "falseNegatives", "truePositives"))
            return tn, fp, fn, tp
    return None


def _class_counts(matrix: list[list[int]] | None,
                  i: int) -> tuple[int, int, int, int] | None:
    """(tn, fp, fn, tp) of class i (0 or 1) from the 2x2 confusion counts."""
    if matrix is None:
        return None
    (tn, fp), (fn, tp) = matrix if i == 1 else (matrix[1][::-1], matrix[0][::-1])
    return tn, fp, fn, tp


def _binary_confusion(overall_raw: dict[str, Any]) -> list[list[int]] | None:
    """[[tn, fp], [fn, tp]] at 0.5 from TFMA's ConfusionMatrixAtThresholds."""
    counts = _counts_at_half(overall_raw)
    return None if counts is None else [list(counts[:2]), list(counts[2:])]


def _binary_class_rates(matrix: list[list[int]] | None,
                        i: int) -> tuple[float | None, float | None]:
    """Precision and recall of class i (0 or 1) from the 2x2 confusion counts."""
    counts = _class_counts(matrix, i)
    if counts is None:
        return None, None
    _, fp, fn, tp = counts
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn)


def _multiclass_confusion(plots: list, num_classes: int) -> list[list[int]] | None:
    """Counts [true][predicted] from TFMA's MultiClassConfusionMatrixPlot (overall slice)."""
    for slice_key, by_output in plots:
        if slice_key:
            continue
        plot = next(iter(next(iter(by_output.values()), {}).values()), {})
        matrices = plot.get("multiClassConfusionMatrixAtThresholds", {}).get("matrices", [])
        if not matrices:
            return None
        matrix = [[0] * num_classes for _ in range(num_classes)]
        for entry in matrices[0].get("entries", []):
            actual, predicted = entry.get("actualClassId", 0), entry.get("predictedClassId", 0)
            if 0 <= actual < num_classes and 0 <= predicted < num_classes:
                matrix[actual][predicted] += int(round(entry.get("numWeightedExamples", 0.0)))
        return matrix
    return None


def gate_thresholds(config: Any) -> dict[str, float | None]:
    """The accuracy gate of an EvalConfig: its lower bound and the allowed drop.

    Args:
      config: the EvalConfig the Evaluator ran with (TFMA stores it with the results).

    Returns:
      {"min_accuracy", "max_accuracy_drop"} as the knobs set them; None where the config sets
      none.
    """
    from components.run_knobs import gate_knobs

    gate: dict[str, float | None] = {"min_accuracy": None, "max_accuracy_drop": None}
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                gate.update({k: v for k, v in gate_knobs(per_slice.threshold).items()
                             if v is not None})
    return gate


def validation(evaluation_uri: str, count: int | None = None) -> dict[str, Any]:
    """The Evaluator's validation result: whether the thresholds held, and each failure.

    Args:
      evaluation_uri: the Evaluator's evaluation artifact uri.
      count: the number of test photos the metrics stand on, if known.

    Returns:
      {"validation_ok": bool | None (no result written), "failures": [one line each: the
       metric, its value, the photos, the threshold as the flag sets it]}.
    """
    import tensorflow_model_analysis as tfma

    try:
        result = tfma.load_validation_result(evaluation_uri)
    except (OSError, ValueError, IndexError):
        return {"validation_ok": None, "failures": []}
    failures = [failure_line(failure, count) for per_slice in result.metric_validations_per_slice
                for failure in per_slice.failures]
    return {"validation_ok": bool(result.validation_ok), "failures": failures}


def failure_line(failure: Any, count: int | None) -> str:
    """One refused threshold, as the user set it.

    Args:
      failure: a TFMA ValidationFailure.
      count: the number of test photos, if known.

    Returns:
      e.g. "accuracy 0.8667 (26 of 30 test photos) < --min-accuracy 0.9".
    """
    from components.run_knobs import gate_knobs

    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    knobs = gate_knobs(threshold)
    if key.is_diff and knobs["max_accuracy_drop"] is not None:
        on = f" on {count} test photos" if count else ""
        return (f"{key.name} {-value:.4f} below the baseline's{on}, more than "
                f"--max-accuracy-drop {knobs['max_accuracy_drop']}")
    if not key.is_diff and knobs["min_accuracy"] is not None:
        photos = f" ({round(value * count)} of {count} test photos)" if count else ""
        return f"{key.name} {value:.4f}{photos} < --min-accuracy {knobs['min_accuracy']}"
    text = f"{key.name}{' change' if key.is_diff else ''} {value:.4f} (threshold {threshold})"
    return " ".join(text.split())
