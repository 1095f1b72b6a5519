"""The end-of-run summary, read back from ML Metadata and the artifacts the run produced."""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.utils import path_utils

from components.batch_predict import predictions_entry
from components.on_device_record import ON_DEVICE_NODE, read_on_device
from components.report import REPORT_HTML, RunReport
from components.report.evaluation import read_evaluation
from components.report.history import epochs_run, kept_epoch, kept_value
from components.report.mlmd import latest_run_executions, open_store, step_entry
from components.report.page import predictions_line
from components.served_baseline import SERVED_VERSION_KEY, baseline_entry
from components.serving_check import blessing_entry, describe
from contract.artifacts import HISTORY_FILE
from contract.knobs import exceeds_max_drop, meets_min_accuracy
from ingestion.convert import REPORT_FILE, IngestResult
from pipeline.config import PipelineConfig
from predict.run import CSV_FILE

SUMMARY_FILE = "run_summary.json"
ON_DEVICE_SUMMARY = ("accuracy", "bytes", "passed", "reason")  # per on-device form


def _outputs(store: metadata_store.MetadataStore, execution_id: int) -> list:
    events = store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    return store.get_artifacts_by_id(ids) if ids else []


def collect_summary(cfg: PipelineConfig, ingested: IngestResult,
                    total_seconds: float) -> dict[str, Any]:
    """Component statuses and times, phase accuracies, test metrics, blessing, serving check,
    pushed path.

    `serving_check` is None when no check ran, else {"component": "ServingCheck" or
    "InfraValidator", "blessed": bool, "reason": str | None (why not blessed),
    "warmup_requests" and "requests": int | None (None from InfraValidator)}.

    Args:
      cfg: the run's config (metadata_path and pipeline_name find the run).
      ingested: the ingestion step's result.
      total_seconds: the run's wall time, in seconds.

    Returns:
      The summary: ingestion, classes, components (status, seconds),
      phase1/phase2_val_accuracy, test_metrics (the report's overall metrics),
      accuracy_interval (95% Wilson), intervals (each test metric's 95% interval entry:
      {"low", "high", "n"}, see components.report.intervals), warning (a test split too
      small for the gate, or None), blessed, serving_check, pushed_to, report, baseline
      (ServedBaseline's baseline_entry, None without the gate), gate (its thresholds),
      on_device (form -> ON_DEVICE_SUMMARY's entries, None without on-device models) and
      total_seconds; without a metadata store, no components and None for the results.
    """
    summary: dict[str, Any] = {
        "ingestion": {"output_dir": ingested.output_dir, "reused": ingested.reused,
                      "report": os.path.join(ingested.output_dir, REPORT_FILE),
                      "seconds": round(ingested.seconds, 1),
                      "per_split": ingested.report["per_split_total"],
                      "skipped": ingested.report["skipped"]},
        "classes": ingested.report["classes"],
        "components": [], "phase1_val_accuracy": None, "phase2_val_accuracy": None,
        "test_metrics": {}, "accuracy_interval": None, "intervals": {}, "warning": None,
        "blessed": None, "serving_check": None, "pushed_to": None,
        "report": None, "baseline": None, "on_device": None, "predictions": None,
        "gate": {"min_accuracy": cfg.min_accuracy, "max_accuracy_drop": cfg.max_accuracy_drop},
        "total_seconds": round(total_seconds, 1),
    }
    if not os.path.exists(cfg.metadata_path):
        return summary
    store = open_store(cfg.metadata_path)
    for execution in latest_run_executions(store, cfg.pipeline_name):
        step = step_entry(store, execution)
        summary["components"].append(step)
        for artifact in _outputs(store, execution.id):
            _read_artifact(store, artifact, summary, step["component"])
    return summary


def serving_check_entry(node_id: str, props: Any) -> dict[str, Any]:
    """The summary's serving_check entry from an InfraBlessing's custom properties.

    Args:
      node_id: the component that wrote it.
      props: the MLMD artifact's custom_properties.

    Returns:
      See `collect_summary`.
    """
    return {"component": node_id, **blessing_entry(props)}


def _read_artifact(store: metadata_store.MetadataStore, artifact: Any,
                   summary: dict[str, Any], node_id: str) -> None:
    type_name = store.get_artifact_types_by_id([artifact.type_id])[0].name
    props = artifact.custom_properties
    if type_name == "ModelRun":
        path = os.path.join(artifact.uri, HISTORY_FILE)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                history = json.load(f)
            for phase in ("phase1", "phase2"):
                if phase in history:
                    record = history[phase]
                    # The weights each phase ended with: its kept epoch's, or (phase 2 kept
                    # none of its epochs) phase 1's.
                    value = (kept_value(record, "val_accuracy") if kept_epoch(record)
                             else summary["phase1_val_accuracy"])
                    summary[f"{phase}_val_accuracy"] = (None if value is None
                                                        else round(value, 4))
                    summary[f"{phase}_kept_epoch"] = [kept_epoch(record),
                                                      epochs_run(record)]
    elif type_name == "Model" and SERVED_VERSION_KEY in props:
        summary["baseline"] = baseline_entry(props)
    elif type_name == "Model" and node_id == ON_DEVICE_NODE:
        record = read_on_device(path_utils.serving_model_path(artifact.uri))
        if record:
            summary["on_device"] = {form: {k: entry.get(k) for k in ON_DEVICE_SUMMARY}
                                    for form, entry in record["forms"].items()}
    elif type_name == "ModelEvaluation":
        # The report's reader; a metric TFMA could not compute (e.g. precision with no
        # positive prediction) is null.
        evaluation = read_evaluation(artifact.uri, summary["classes"])
        summary["test_metrics"] = {k: None if v is None else round(v, 4)
                                   for k, v in evaluation["overall"].items()}
        summary["accuracy_interval"] = evaluation["accuracy_interval"]
        summary["intervals"] = evaluation["intervals"]
        summary["warning"] = evaluation["warning"]
    elif type_name == "ModelBlessing" and "blessed" in props:
        summary["blessed"] = bool(props["blessed"].int_value)
    elif type_name == "InfraBlessing":
        summary["serving_check"] = serving_check_entry(node_id, props)
    elif type_name == "InferenceResult":
        summary["predictions"] = predictions_entry(props, artifact.uri)
    elif type_name == RunReport.TYPE_NAME:
        summary["report"] = os.path.join(artifact.uri, REPORT_HTML)
    elif type_name == "PushedModel" and props.get("pushed") and props["pushed"].int_value:
        summary["pushed_to"] = props["pushed_destination"].string_value


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable table printed at the end of a run.

    Args:
      summary: the run summary (collect_summary).

    Returns:
      The text, one line per step, then the results.
    """
    lines = ["", "=== run summary ==="]
    ing = summary["ingestion"]
    lines.append(f"{'ingestion':<30} {'reused' if ing['reused'] else 'converted':>9}  "
                 f"{ing['seconds']:7.1f}s  {ing['per_split']}, skipped {ing['skipped']} "
                 f"(see {ing['report']})")
    for c in summary["components"]:
        lines.append(f"{c['component']:<30} {c['status']:>9}  {c['seconds']:7.1f}s")
    lines.append("validation accuracy of the kept weights: " + ", ".join(
        _phase_line(summary, phase) for phase in ("phase1", "phase2")))
    metrics = dict(summary["test_metrics"])
    if metrics:
        accuracy, count = metrics.pop("accuracy", None), metrics.pop("example_count", None)
        interval = summary.get("accuracy_interval")
        if accuracy is not None and count:
            low, high = interval or (None, None)
            lines.append(f"test accuracy {accuracy}: {round(accuracy * count)} of {count} photos"
                         + (f", 95% interval {low:.3f}-{high:.3f}" if interval else ""))
        shown = ", ".join(f"{k} {v}{_interval_text(summary, k)}" for k, v in metrics.items())
        if shown:
            lines.append(f"test metrics: {shown}")
    if summary.get("warning"):
        lines.append(f"warning: {summary['warning']}")
    if summary.get("baseline"):
        lines.append(f"no-regression baseline: {summary['baseline']['note']}")
    lines.append(f"blessed: {summary['blessed']}")
    check = summary["serving_check"]
    by = f" ({check['component']})" if check else ""
    lines.append(f"serving check{by}: {describe(check)}")
    lines.append(f"pushed to: {summary['pushed_to'] or 'not pushed' + _why_not_pushed(summary)}")
    for form, entry in (summary.get("on_device") or {}).items():
        lines.append(f"on-device {form}: {_on_device_text(entry, bool(summary['pushed_to']))}")
    if summary.get("predictions"):
        folder = summary["predictions"]["folder"]
        lines.append(f"predictions: {predictions_line(summary['predictions'])}: "
                     f"{os.path.join(folder, CSV_FILE)}")
    if summary["report"]:
        lines.append(f"report: {summary['report']}")
    lines.append(f"total wall time: {summary['total_seconds']:.1f}s")
    return "\n".join(lines)


def _on_device_text(entry: dict[str, Any], pushed: bool) -> str:
    if entry.get("accuracy") is None:
        return f"not pushed: {entry['reason']}"
    text = f"test accuracy {entry['accuracy']:.4f}, {entry['bytes'] / 2**20:.2f} MB, "
    if not entry["passed"]:
        return text + f"not pushed: {entry['reason']}"
    return text + ("pushed beside the SavedModel" if pushed else "within the drop allowed")


def _interval_text(summary: dict[str, Any], metric: str) -> str:
    entry = (summary.get("intervals") or {}).get(metric)
    return "" if not entry else (f" (95% {entry['low']:.3f}-{entry['high']:.3f}, "
                                  f"{entry['n']} photos)")


def _phase_line(summary: dict[str, Any], phase: str) -> str:
    name = f"phase {phase[-1]}"
    if summary.get(f"{phase}_kept_epoch") is None:
        return f"{name} not run"
    kept, run = summary[f"{phase}_kept_epoch"]
    where = (f"epoch {kept} of {run}" if kept
             else f"none of its {run} epochs beat phase 1: phase 1's weights kept")
    return f"{name} {summary[f'{phase}_val_accuracy']} ({where})"


def _why_not_pushed(summary: dict[str, Any]) -> str:
    refused = [gate for gate, blessed in
               (("the Evaluator", summary["blessed"]),
                ("the serving check", (summary["serving_check"] or {}).get("blessed")))
               if blessed is False]
    if not refused:
        return ""
    why = _evaluator_reasons(summary) if summary["blessed"] is False else []
    return f" (not blessed by {' and '.join(refused)}{': ' if why else ''}{'; '.join(why)})"


def _evaluator_reasons(summary: dict[str, Any]) -> list[str]:
    """Which of the Evaluator's accuracy thresholds the candidate missed, with the numbers and
    the number of test photos they stand on."""
    metrics, gate = summary["test_metrics"], summary.get("gate") or {}
    accuracy, diff = metrics.get("accuracy"), metrics.get("accuracy_diff")
    count = metrics.get("example_count")
    on = (f" ({round(accuracy * count)} of {int(count)} test photos)"
          if accuracy is not None and count else "")
    reasons = []
    if accuracy is not None and not meets_min_accuracy(accuracy, gate.get("min_accuracy", 0)):
        reasons.append(f"accuracy {accuracy}{on} < --min-accuracy {gate['min_accuracy']}")
    if (accuracy is not None and diff is not None
            and exceeds_max_drop(-diff, gate.get("max_accuracy_drop", 1))):
        baseline = (summary.get("baseline") or {}).get("note", "the baseline")
        reasons.append(f"accuracy {accuracy}{on} is {-diff:.4f} below the {accuracy - diff:.4f} "
                       f"of {baseline}, more than --max-accuracy-drop {gate['max_accuracy_drop']}")
    return reasons


_MAX_ERROR = 300


def describe_failure(error: BaseException, summary: dict[str, Any]) -> str:
    """One line for a failed pipeline run, naming the component that failed.

    Args:
      error: what the runner raised.
      summary: the run summary (collect_summary): a FAILED component names the step.

    Returns:
      "<component> failed: <Type>: <the message's first line, at most _MAX_ERROR characters>",
      or without the component
      when no execution is marked FAILED (the runner failed outside a component).
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else "(no message)"
    if len(first) > _MAX_ERROR:  # e.g. Beam quotes a whole damaged record
        first = first[:_MAX_ERROR] + " [...]"
    text = f"{type(error).__name__}: {first}"
    failed = [c["component"] for c in summary["components"] if c["status"] == "FAILED"]
    return f"{failed[-1]} failed: {text}" if failed else text


def write_summary(cfg: PipelineConfig, summary: dict[str, Any]) -> str:
    """Writes run_summary.json into the output dir and returns its path.

    Args:
      cfg: the run's config (output_dir).
      summary: the run summary, JSON-serializable.

    Returns:
      The path of run_summary.json.
    """
    path = os.path.join(cfg.output_dir, SUMMARY_FILE)
    tf.io.gfile.makedirs(cfg.output_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(summary, f, indent=1)
    return path
