"""The run report as a TFX component: one self-contained HTML page a person can read, and the
same page, a Markdown digest and the key metrics as Kubeflow Pipelines UI artifacts.

The page, in order: the verdict (pushed or not and why, accuracy against the threshold and the
baseline); Data (counts per class and split, skipped files, anomalies); Training (curves of both
phases, fine-tuning start and kept epoch, the configuration); Evaluation (TFMA's metrics overall
and per class, confusion matrix, reliability diagram, a class-balanced prediction grid, the most
confident mistakes); Serving (pushed path and version, signature, a curl and a client command);
Timing (each step's status and wall time from ML Metadata).

Modules: `build` gathers the numbers and writes the files, `page` renders them, `plots` draws,
`predictions` serves the test split, `evaluation` reads TFMA, `history` reads history.json,
`mlmd` reads the run's steps.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import json
import logging
import os
from typing import Any

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import (
    ExampleAnomalies,
    Examples,
    InferenceResult,
    InfraBlessing,
    Model,
    ModelBlessing,
    ModelEvaluation,
    ModelRun,
    PushedModel,
)
from tfx.utils import path_utils

from components.anomaly_gate import describe_anomalies
from components.batch_predict import predictions_entry
from components.report.build import REPORT_HTML, REPORT_JSON, ReportSources, build_report
from components.report.mlmd import run_steps
from components.serving_check import blessing_entry
from contract.artifacts import HISTORY_FILE, INGESTION_REPORT_FILE
from system import HTML, ClassificationMetrics, Markdown, Metrics

__all__ = ["REPORT_HTML", "REPORT_JSON", "RunReport", "RunReportGen"]

LOG = logging.getLogger("components.report")


class RunReport(Artifact):
    """A folder with the run's page (index.html), its numbers (report.json) and figures."""

    # Kubeflow needs "<module>.<Class>" (one dot) and imports the class by it in the pods;
    # components/__init__.py resolves the name.
    TYPE_NAME = "components.RunReport"


def _read_json(path: str) -> dict | None:
    """A JSON file's content, or None (logged) if it cannot be read."""
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (tf.errors.OpError, ValueError) as e:
        LOG.warning("report: cannot read %s: %s", path, e)
        return None


def plain_properties(artifact: Artifact) -> Any:
    """An artifact's custom properties as ML Metadata values of their own types.

    In a Kubeflow pod, TFX's V2 entrypoint hands a component its inputs' custom properties as
    JSON (struct) values, with numbers as floats; `blessing_entry` reads typed values, as a
    local run stores them.

    Args:
      artifact: an input artifact.

    Returns:
      The custom properties: ints, floats and strings in int_value, double_value and
      string_value.
    """
    typed = metadata_store_pb2.Artifact()
    for key, value in artifact.mlmd_artifact.custom_properties.items():
        if not value.HasField("struct_value"):
            typed.custom_properties[key].CopyFrom(value)
            continue
        plain, target = artifact.get_json_value_custom_property(key), typed.custom_properties[key]
        if isinstance(plain, str):
            target.string_value = plain
        elif isinstance(plain, int | float) and float(plain).is_integer():
            target.int_value = int(plain)
        elif isinstance(plain, float):
            target.double_value = plain
    return typed.custom_properties


def _mark_kfp_outputs(numbers: dict, metrics: Artifact, confusion: Artifact) -> None:
    """The overall metrics and the confusion matrix as Kubeflow's UI reads them."""
    intervals = numbers["evaluation"].get("intervals") or {}
    for name, value in numbers["evaluation"]["overall"].items():
        if value is not None:
            metrics.set_float_custom_property(name, float(value))
        if intervals.get(name):
            for bound in ("low", "high"):
                metrics.set_float_custom_property(f"{name}_95_{bound}",
                                                  float(intervals[name][bound]))
    metrics.set_float_custom_property("expected_calibration_error",
                                      numbers["evaluation"]["calibration"]["ece"])
    matrix = (numbers["evaluation"]["confusion_matrix"]
              or numbers["evaluation"]["served"]["confusion_matrix"])
    confusion.set_json_value_custom_property("confusionMatrix", {
        "annotationSpecs": [{"displayName": c} for c in numbers["classes"]],
        "rows": [{"row": row} for row in matrix]})


@component
def RunReportGen(  # noqa: N802 (TFX component names are classes)
    examples: InputArtifact[Examples],
    model: InputArtifact[Model],
    model_run: InputArtifact[ModelRun],
    blessing: InputArtifact[ModelBlessing],
    evaluation: InputArtifact[ModelEvaluation],
    serving_check: InputArtifact[InfraBlessing],
    pushed_model: InputArtifact[PushedModel],
    anomalies: InputArtifact[ExampleAnomalies],
    report: OutputArtifact[RunReport],
    html: OutputArtifact[HTML],
    markdown: OutputArtifact[Markdown],
    metrics: OutputArtifact[Metrics],
    confusion: OutputArtifact[ClassificationMetrics],
    predictions: InputArtifact[InferenceResult] = None,  # optional: TFX's form of it
    ingested_dir: Parameter[str] = "",
    metadata_path: Parameter[str] = "",
    pipeline_name: Parameter[str] = "",
    num_samples: Parameter[int] = 16,
) -> None:
    """The run's page from its artifacts; runs last, after the Pusher.

    Args:
      examples: the Examples; the report serves its test split.
      model: the Trainer's Model (its serving SavedModel).
      model_run: the Trainer's ModelRun (history.json).
      blessing: the Evaluator's ModelBlessing.
      evaluation: the Evaluator's ModelEvaluation (TFMA's metrics and validation).
      serving_check: the ServingCheck's (or InfraValidator's) InfraBlessing.
      pushed_model: the Pusher's PushedModel (pushed or not, where, which version).
      anomalies: ExampleValidator's ExampleAnomalies.
      report: index.html, report.json and the figures.
      html: the same page, for Kubeflow's UI (system.HTML).
      markdown: the verdict and key numbers, for Kubeflow's UI (system.Markdown).
      metrics: the overall test metrics (system.Metrics).
      confusion: the confusion matrix (system.ClassificationMetrics).
      predictions: BatchPredict's InferenceResult, when the run classified a --predict-dir.
      ingested_dir: the converted TFRecords' folder, which holds the ingestion report.
      metadata_path: the local run's SQLite ML Metadata, for the Timing section; empty where
        the orchestrator owns ML Metadata (Kubeflow).
      pipeline_name: the pipeline's name in ML Metadata.
      num_samples: about how many test photos the prediction grid shows.
    """
    history = _read_json(os.path.join(model_run.uri, HISTORY_FILE)) or {}
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    steps = run_steps(metadata_path, pipeline_name) if metadata_path else None
    sources = ReportSources(
        examples_uri=examples.uri,
        model_dir=path_utils.serving_model_path(model.uri,
                                                path_utils.is_old_model_artifact(model)),
        evaluation_uri=evaluation.uri, history=history,
        blessed=bool(blessing.get_int_custom_property("blessed")),
        serving_check=blessing_entry(plain_properties(serving_check)),
        pushed={"pushed": bool(pushed_model.get_int_custom_property("pushed")),
                "path": pushed_model.get_string_custom_property("pushed_destination") or None,
                "version": pushed_model.get_string_custom_property("pushed_version") or None},
        anomalies=describe_anomalies(anomalies.uri, splits), validated_splits=splits,
        ingestion=(_read_json(os.path.join(ingested_dir, INGESTION_REPORT_FILE))
                   if ingested_dir else None),
        steps=steps, num_samples=num_samples,
        predictions=(predictions_entry(plain_properties(predictions), predictions.uri)
                     if predictions else None))
    numbers, page_html, page_markdown = build_report(sources, report.uri)
    html.value = page_html
    markdown.value = page_markdown
    _mark_kfp_outputs(numbers, metrics, confusion)
