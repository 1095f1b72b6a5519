"""The pipeline's optional last scoring step: a folder of unlabelled photos (`--predict-dir`)
classified by the run's model, as `tfx-image-transfer-predict` classifies them (the same
Beam pipeline on RunInference, predict.run.predict_images), into an InferenceResult the run
report links.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import InferenceResult, Model, PushedModel
from tfx.utils import path_utils

from predict.run import predict_images

LOG = logging.getLogger("components.batch_predict")
BATCH_PREDICT_NODE = "BatchPredict"  # the step's component id in the pipeline
# The InferenceResult's custom properties.
ROWS_KEY, SKIPPED_KEY, SOURCE_KEY, VERSION_KEY = "rows", "skipped", "source", "pushed_version"


def predictions_entry(properties: Mapping[str, Any], uri: str) -> dict[str, Any]:
    """What the report and the summary say of the predictions.

    Args:
      properties: the InferenceResult's custom properties, ML Metadata values (as a local
        run stores them; components.report.plain_properties makes them so in a pod).
      uri: its uri (the folder of predictions.csv, predictions.jsonl and skipped.csv).

    Returns:
      {"source", "rows", "skipped" (reason -> files), "version" (the pushed version that
      made them, or None: the model was not pushed), "folder"}.
    """

    def value(key: str) -> Any:
        if key not in properties:
            return None
        field = properties[key]
        return field.int_value if field.HasField("int_value") else field.string_value

    return {"source": value(SOURCE_KEY), "rows": value(ROWS_KEY),
            "skipped": json.loads(value(SKIPPED_KEY) or "{}"),
            "version": value(VERSION_KEY) or None, "folder": uri}


@component
def BatchPredict(  # noqa: N802 (TFX component names are classes)
    model: InputArtifact[Model],
    pushed_model: InputArtifact[PushedModel],
    predictions: OutputArtifact[InferenceResult],
    predict_dir: Parameter[str],
) -> None:
    """Classifies every photo below predict_dir with the run's model.

    Args:
      model: the model the Pusher was given (the run's SavedModel).
      pushed_model: the Pusher's PushedModel: which version the rows came from, if pushed.
      predictions: predictions.csv, predictions.jsonl and skipped.csv (predict.run).
      predict_dir: the folder of photos (any layout ingestion reads, or flat).
    """
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    result = predict_images(model_dir, predict_dir, predictions.uri)
    version = (pushed_model.get_string_custom_property("pushed_version")
               if pushed_model.get_int_custom_property("pushed") else "")
    predictions.set_string_custom_property(SOURCE_KEY, predict_dir)
    predictions.set_int_custom_property(ROWS_KEY, result.rows)
    predictions.set_string_custom_property(SKIPPED_KEY, json.dumps(dict(result.skipped)))
    predictions.set_string_custom_property(VERSION_KEY, version)
    LOG.info("%d photos of %s classified, %d files skipped", result.rows, predict_dir,
             sum(result.skipped.values()))
