"""The Trainer's history.json read as the report shows it: both phases on one epoch axis, the
fine-tuning start and the epoch whose weights were kept."""

from __future__ import annotations

from typing import Any

PHASES = ("phase1", "phase2")


def kept_epoch(record: dict[str, Any]) -> int:
    """The 1-based epoch (within its phase) whose weights the phase kept.

    Args:
      record: a phase record of history.json ({"history": {metric: [per epoch]}, ...}).

    Returns:
      Its "kept_epoch", or the last epoch when the Trainer did not record one (it then kept
      the weights of its last epoch). 0 in phase 2: no fine-tuning epoch beat phase 1, whose
      weights were kept.
    """
    if "kept_epoch" in record:
        return int(record["kept_epoch"])
    return len(next(iter(record["history"].values()), []))


def epochs_run(record: dict[str, Any]) -> int:
    """The number of epochs a phase ran (early stopping may end it before its budget).

    Args:
      record: a phase record of history.json.

    Returns:
      The length of its per-epoch series.
    """
    return max((len(v) for v in record["history"].values()), default=0)


def kept_value(record: dict[str, Any], metric: str) -> float | None:
    """A metric's value at the phase's kept epoch.

    Args:
      record: a phase record of history.json.
      metric: e.g. "val_accuracy".

    Returns:
      The value, or None if the phase did not record the metric.
    """
    series, kept = record["history"].get(metric), kept_epoch(record)
    return float(series[kept - 1]) if series and 0 < kept <= len(series) else None


def phase_rows(history: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per phase that ran, on the run's epoch axis (phase 2 follows phase 1).

    Args:
      history: history.json: {"classes", "config", "phase1", "phase2" (if it ran)}.

    Returns:
      [{"phase", "first_epoch", "epochs", "kept_epoch" (on the run's axis; None if the phase
        kept none of its epochs), "kept_in_phase", "exported" (the exported weights are this
        phase's kept epoch), "trainable_weights", "seconds", "val_accuracy", "val_loss" (at
        the kept epoch)}].
    """
    rows, offset = [], 0
    for phase in PHASES:
        if phase not in history:
            continue
        record = history[phase]
        kept = kept_epoch(record)
        rows.append({"phase": phase, "first_epoch": offset + 1, "epochs": epochs_run(record),
                     "kept_epoch": offset + kept if kept > 0 else None,
                     "kept_in_phase": kept, "exported": False,
                     "trainable_weights": record.get("trainable_weights"),
                     "seconds": record.get("seconds"),
                     "val_accuracy": kept_value(record, "val_accuracy"),
                     "val_loss": kept_value(record, "val_loss")})
        offset += epochs_run(record)
    kept_rows = [r for r in rows if r["kept_epoch"] is not None]
    if kept_rows:
        kept_rows[-1]["exported"] = True
    return rows


def series(history: dict[str, Any], metric: str) -> list[float]:
    """A metric's values over both phases, in epoch order.

    Args:
      history: history.json.
      metric: e.g. "accuracy" or "val_loss".

    Returns:
      The values; a phase without the metric contributes NaNs, so epochs stay aligned.
    """
    values: list[float] = []
    for phase in PHASES:
        if phase in history:
            record = history[phase]
            values += record["history"].get(metric) or [float("nan")] * epochs_run(record)
    return [float(v) for v in values]
