"""A gate after ExampleValidator: any data anomaly stops the run with a readable message.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""


import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes per split


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema inferred from the training split."""


def describe_anomalies(anomalies_uri: str, split_names: list[str]) -> list[str]:
    """One line per anomaly: '<split>: <feature>: <short description> (<details>)'.

    Args:
      anomalies_uri: the ExampleAnomalies artifact's uri.
      split_names: the splits to read (Split-<name>/SchemaDiff.pb each).

    Returns:
      The lines, by split then feature; empty if there is no anomaly.
    """
    problems = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            problems.append(f"{split}: {feature}: {info.short_description} ({info.description})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            problems.append(f"{split}: dataset: {info.short_description} ({info.description})")
    return problems


@component
def AnomalyGate(anomalies: InputArtifact[ExampleAnomalies]) -> None:  # noqa: N802 (TFX style)
    """Fails (stopping everything downstream) if ExampleValidator found any anomaly.

    Args:
      anomalies: ExampleValidator's ExampleAnomalies.

    Raises:
      DataAnomaliesError: a split has an anomaly; the message lists them all.
    """
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    problems = describe_anomalies(anomalies.uri, splits)
    if problems:
        raise DataAnomaliesError(
            "ExampleValidator found data anomalies; training stopped:\n  " + "\n  ".join(problems)
            + f"\nDetails: {anomalies.uri}. Fix the data (or the schema) and rerun.")
