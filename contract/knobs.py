"""The knobs a compiled pipeline takes at run time, and each numeric knob's valid range.

The pipeline checks its flags against RANGES before any work; the Trainer and Evaluator
(components/run_knobs.py) check their run knobs against it when they run, since a Kubeflow
run can set those as runtime parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# The Trainer's run knobs (TrainingConfig fields) and the Evaluator's (its accuracy gate), by
# type: each is an exec property of its own and a runtime parameter on Kubeflow.
TRAINER_KNOBS: dict[str, type] = {
    "epochs": int, "patience": int, "learning_rate": float, "batch_size": int,
    "fine_tune_epochs": int, "fine_tune_at": int, "fine_tune_lr_factor": float,
}
GATE_KNOBS: dict[str, type] = {"min_accuracy": float, "max_accuracy_drop": float}

# knob -> (the rule as users read it, check).
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "eval_fraction": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "test_fraction": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "validation_test_fraction": ("must be in (0, 1)", lambda v: 0 < v < 1),
    "min_image_side": ("must be >= 1", lambda v: v >= 1),
    "num_shards": ("must be in [0, 1000] (0: the runner picks)", lambda v: 0 <= v <= 1000),
    "max_image_pixels": ("must be >= 1", lambda v: v >= 1),
    "max_file_bytes": ("must be >= 1", lambda v: v >= 1),
    "alpha": ("must be in (0, 1.4] (MobileNetV2's widths)", lambda v: 0 < v <= 1.4),
    "image_size": ("must be in [32, 1024] pixels (MobileNetV2 needs >= 32)",
                   lambda v: 32 <= v <= 1024),
    "dropout": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "rotation": ("must be in [0, 1] (a fraction of a full turn)", lambda v: 0 <= v <= 1),
    "batch_size": ("must be in [1, 4096]", lambda v: 1 <= v <= 4096),
    "epochs": ("must be >= 1", lambda v: v >= 1),
    "patience": ("must be >= 0", lambda v: v >= 0),
    "learning_rate": ("must be in (0, 1]", lambda v: 0 < v <= 1),
    "fine_tune_epochs": ("must be >= 0", lambda v: v >= 0),
    "fine_tune_at": ("must be >= 0", lambda v: v >= 0),
    "fine_tune_lr_factor": ("must be in (0, 10]", lambda v: 0 < v <= 10),
    "shuffle_buffer": ("must be >= 1", lambda v: v >= 1),
    "min_accuracy": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "max_accuracy_drop": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "on_device_max_drop": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "beam_workers": ("must be in [1, 64]", lambda v: 1 <= v <= 64),
}


def flag_name(knob: str) -> str:
    """The command-line flag of a knob.

    Args:
      knob: a config field name, e.g. fine_tune_at.

    Returns:
      The flag, e.g. --fine-tune-at.
    """
    return "--" + knob.replace("_", "-")


def range_problems(values: Mapping[str, Any], as_flags: bool = True) -> list[str]:
    """The values that break their knob's rule, as "<name> <rule>" phrases.

    Args:
      values: knob name -> value; knobs without a range are ignored.
      as_flags: name the knobs by their flags (--fine-tune-at); else by their own names
        (fine_tune_at), as runtime parameters are.

    Returns:
      One phrase per bad value, in RANGES order; empty when all are valid.
    """
    return [f"{flag_name(k) if as_flags else k} {rule}" for k, (rule, check) in RANGES.items()
            if k in values and not check(values[k])]


# TFMA computes accuracy in float32 (27 of 30 is 0.89999998) and compares it with the bounds in
# float64, so an accuracy exactly at the lower bound, or a drop exactly at the allowed one, would
# be refused. The bounds written into the eval config are widened by GATE_TOLERANCE: far less
# than one photo of any test split under a million photos.
GATE_TOLERANCE = 1e-6


def meets_min_accuracy(accuracy: float, min_accuracy: float) -> bool:
    """Whether accuracy (TFMA's, float32) meets --min-accuracy as the gate judges it."""
    return accuracy >= min_accuracy - GATE_TOLERANCE


def exceeds_max_drop(drop: float, max_accuracy_drop: float) -> bool:
    """Whether a drop below the baseline's accuracy is more than --max-accuracy-drop allows,
    as the gate judges it."""
    return drop > max_accuracy_drop + GATE_TOLERANCE
