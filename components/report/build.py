"""Gathers the report's numbers from the run's artifacts and writes the page, its figures and
report.json."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Any

import numpy as np
import tensorflow as tf

from components.on_device_record import read_on_device, saved_model_bytes
from components.report import history as hist
from components.report import page, plots
from components.report.evaluation import read_evaluation
from components.report.predictions import (
    balanced_sample,
    confident_mistakes,
    confusion_matrix,
    predict,
    read_split,
    reliability,
    thumbnail,
)
from components.serving_check import describe
from contract.artifacts import SAVED_MODEL_FILE, TFLITE_DIR
from predict.run import PREDICTION_FILES
from serving.constants import GRPC_PORT, REST_PORT

REPORT_HTML = "index.html"
REPORT_JSON = "report.json"
MAX_SKIPPED_LISTED = 50
_TIMING_NOTE = ("RunReport itself is still running while it writes this page; "
                "run_summary.json has its time.")
_NO_MLMD_NOTE = ("This run's ML Metadata belongs to the orchestrator (Kubeflow Pipelines): the "
                 "run's graph in its UI shows each step's time and whether it was cached.")


@dataclasses.dataclass
class ReportSources:
    """Everything the report reads, each from a pipeline artifact (or the ingestion report).

    examples_uri/model_dir/evaluation_uri: the Examples, the SavedModel and the
    ModelEvaluation; history: history.json; blessed: the Evaluator's verdict; serving_check:
    the check's `blessing_entry` (None: no check ran); pushed: {"pushed", "path", "version"};
    anomalies: ExampleValidator's findings (describe_anomalies) over validated_splits;
    ingestion: ingestion_report.json (None if unreadable); steps: the run's steps from ML
    Metadata (None: not available to this step).
    """

    examples_uri: str
    model_dir: str
    evaluation_uri: str
    history: dict[str, Any]
    blessed: bool | None
    serving_check: dict[str, Any] | None
    pushed: dict[str, Any]
    anomalies: list[str]
    validated_splits: list[str]
    ingestion: dict[str, Any] | None
    steps: list[dict[str, Any]] | None
    num_samples: int = 16
    num_mistakes: int = 8
    predictions: dict[str, Any] | None = None  # batch_predict.predictions_entry, if any


def data_numbers(ingestion: dict[str, Any] | None, anomalies: list[str],
                 validated_splits: list[str]) -> dict[str, Any]:
    """The page's Data section from the ingestion report and ExampleValidator's findings.

    Args:
      ingestion: ingestion_report.json, or None if it could not be read.
      anomalies: one line per anomaly.
      validated_splits: the splits ExampleValidator checked.

    Returns:
      {"source", "per_split", "per_split_total", "written", "skipped", "skipped_by_reason",
       "skipped_files" (the first 50), "anomalies", "validated_splits"}.
    """
    ingestion = ingestion or {}
    skipped = [{"path": f["path"], "reason": f["reason"]}
               for f in ingestion.get("files", []) if f.get("status") == "skipped"]
    return {"source": ingestion.get("root", "unknown (no ingestion report)"),
            "per_split": ingestion.get("per_split", {}),
            "per_split_total": ingestion.get("per_split_total", {}),
            "written": ingestion.get("written"), "skipped": ingestion.get("skipped", 0),
            "skipped_by_reason": ingestion.get("skipped_by_reason", {}),
            "skipped_files": skipped[:MAX_SKIPPED_LISTED],
            "anomalies": anomalies, "validated_splits": validated_splits}


def serving_numbers(pushed: dict[str, Any], signature: dict[str, Any], example_path: str,
                    check: dict[str, Any] | None, blessed: bool | None) -> dict[str, Any]:
    """The page's Serving section: where the model went and how to query it.

    Args:
      pushed: {"pushed", "path", "version"} from the PushedModel.
      signature: the serving signature's description (predictions.predict).
      example_path: a test image to put in the query commands.
      check: the serving check's blessing_entry, or None.
      blessed: the Evaluator's verdict.

    Returns:
      {"pushed", "path", "version", "model_name", "signature", "check", "check_text",
       "why_not", "curl", "client"}.
    """
    path = pushed.get("path") or ""
    name = os.path.basename(os.path.dirname(path.rstrip("/"))) if path else None
    refused = [gate for gate, ok in (("the Evaluator", blessed),
                                     ("the serving check", (check or {}).get("blessed")))
               if ok is False]
    out = {"pushed": bool(pushed.get("pushed")), "path": path or None,
           "version": pushed.get("version"), "model_name": name, "signature": signature,
           "check": check, "check_text": describe(check),
           "why_not": f"not blessed by {' and '.join(refused)}" if refused else "not blessed",
           "curl": None, "client": None}
    if out["pushed"]:
        image = shlex.quote(example_path)
        out["curl"] = (f"curl -s http://localhost:{REST_PORT}/v1/models/{name}/versions/"
                       f"{out['version']}:predict -d \"{{\\\"signature_name\\\": "
                       f"\\\"{signature['name']}\\\", \\\"instances\\\": [{{\\\"b64\\\": "
                       f"\\\"$(base64 -w0 {image})\\\"}}]}}\"")
        out["client"] = (f"tfx-image-transfer-client predict --grpc localhost:{GRPC_PORT} "
                         f"--model {shlex.quote(name)} --version {out['version']} {image}")
    return out


def _entry(index: int, labels: np.ndarray, probabilities: np.ndarray, paths: list[str],
           classes: list[str]) -> dict[str, Any]:
    predicted = int(np.argmax(probabilities[index]))
    return {"index": index, "path": paths[index], "true": classes[labels[index]],
            "predicted": classes[predicted],
            "probability": round(float(probabilities[index, predicted]), 4)}


def _example_image(ingestion: dict[str, Any] | None, paths: list[str]) -> str:
    """A test image's full path for the query commands (paths in the records are relative
    to the data folder the ingestion report names)."""
    if not paths:
        return "IMAGE.jpg"
    root = (ingestion or {}).get("root")
    return os.path.join(root, paths[0]) if root else paths[0]


def on_device_numbers(model_dir: str, pushed: bool) -> dict[str, Any] | None:
    """The page's rows for each exported form: the SavedModel and the on-device models.

    Args:
      model_dir: the model the Pusher was given (its tflite/on_device.json, if any).
      pushed: whether the Pusher pushed it.

    Returns:
      {"input", "output", "labels", "max_accuracy_drop", "rows": [{"form", "file", "bytes",
      "accuracy", "interval", "photos", "drop", "pushed", "reason"}]}, the SavedModel first;
      None when the run exported no on-device models.
    """
    record = read_on_device(model_dir)
    if record is None:
        return None
    rows = [{"form": "SavedModel", "file": SAVED_MODEL_FILE + " + variables",
             "bytes": saved_model_bytes(model_dir), **record["saved_model"], "drop": 0.0,
             "pushed": pushed, "reason": ""}]
    rows += [{"form": form, **entry, "pushed": pushed and entry["passed"],
              "reason": entry["reason"] or ("" if pushed else "the model was not pushed")}
             for form, entry in record["forms"].items()]
    return {"input": record["input"], "output": record["output"],
            "labels": f"{TFLITE_DIR}/{record['labels']}",
            "max_accuracy_drop": record["max_accuracy_drop"], "rows": rows}


def build_report(src: ReportSources, out_dir: str) -> tuple[dict[str, Any], str, str]:
    """Writes index.html, report.json and the figures into out_dir.

    Args:
      src: the run's artifacts, read.
      out_dir: the report folder (created if missing).

    Returns:
      (the numbers in report.json, the page's HTML, its Markdown digest).
    """
    tf.io.gfile.makedirs(out_dir)
    images, labels, paths = read_split(src.examples_uri, "test")
    probabilities, classes, signature = predict(src.model_dir, images)
    predicted = np.argmax(probabilities, axis=1)
    evaluation = read_evaluation(src.evaluation_uri, classes)
    served_matrix = confusion_matrix(labels, predicted, len(classes)).tolist()
    samples = balanced_sample(labels, len(classes), src.num_samples)
    mistakes = confident_mistakes(labels, probabilities, src.num_mistakes)
    entry = lambda i: _entry(i, labels, probabilities, paths, classes)  # noqa: E731
    numbers = {
        "classes": classes,
        "verdict": {"blessed": src.blessed},
        "data": data_numbers(src.ingestion, src.anomalies, src.validated_splits),
        "training": {"phases": hist.phase_rows(src.history),
                     "config": src.history.get("config", {})},
        "evaluation": {
            **evaluation,
            "served": {"accuracy": round(float(np.mean(predicted == labels)), 4)
                       if len(labels) else None,
                       "confusion_matrix": served_matrix,
                       "agrees": served_matrix == evaluation["confusion_matrix"]},
            "calibration": reliability(labels, probabilities),
            "samples": [entry(i) for i in samples],
            "mistakes": [entry(i) for i in mistakes]},
        "serving": serving_numbers(src.pushed, signature, _example_image(src.ingestion, paths),
                                   src.serving_check, src.blessed),
        "on_device": on_device_numbers(src.model_dir, bool(src.pushed.get("pushed"))),
        "predictions": src.predictions and {
            **src.predictions, "files": {kind: os.path.join(src.predictions["folder"], name)
                                         for kind, name in PREDICTION_FILES.items()}},
        "timing": {"steps": src.steps or [],
                   "note": _TIMING_NOTE if src.steps is not None else _NO_MLMD_NOTE},
    }
    matrix = evaluation["confusion_matrix"] or served_matrix
    figures = {"learning_curves": plots.learning_curves(src.history),
               "confusion_matrix": plots.confusion_matrix(
                   matrix, classes, f"test split, {int(np.sum(matrix))} images (TFMA)"),
               "reliability": plots.reliability_diagram(numbers["evaluation"]["calibration"])}
    thumbs = {i: thumbnail(images[i]) for i in {*samples, *mistakes}}
    for name, png in figures.items():
        with tf.io.gfile.GFile(os.path.join(out_dir, f"{name}.png"), "wb") as f:
            f.write(png)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_JSON), "w") as f:
        json.dump(numbers, f, indent=1)
    text = page.render_html(numbers, figures, thumbs)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_HTML), "w") as f:
        f.write(text)
    return numbers, text, page.render_markdown(numbers)
