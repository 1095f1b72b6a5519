"""The on-device gate: each TFLite form the Trainer wrote is scored on the test split, as a
phone runs it, and goes beside the SavedModel only if its accuracy is within a set drop of
the SavedModel's (the Evaluator's, on the same photos).

`OnDeviceGate` outputs the Model the Pusher pushes: the Trainer's SavedModel, byte for byte,
with a `tflite/` folder (contract.artifacts.TFLITE_DIR) holding the forms that passed, the
labels and `on_device.json` (the input each form takes, and every form's accuracy, interval,
size and verdict, passed or not). TF Serving loads a version's SavedModel files and ignores
the folder.

TFMA is not used for the forms: its TFLite extractor feeds a tf.Example's features to the
model's inputs by name, and the examples hold encoded photos where the forms take pixels.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import Examples, Model, ModelEvaluation
from tfx.utils import io_utils, path_utils

from components.report.evaluation import read_evaluation
from components.report.intervals import wilson_interval
from contract import features
from contract.artifacts import ON_DEVICE_FILE, TFLITE_DIR, TFLITE_FORMS, tflite_file
from contract.interface import LABELS_ASSET, PIXELS_INPUT, PROBABILITIES
from contract.knobs import exceeds_max_drop
from contract.labels import parse_labels
from trainer.data import feature_spec, record_dataset
from trainer.images import device_pixels
from trainer.tflite_export import TFLITE_MODEL_DIR, load_interpreter, tflite_probabilities

LOG = logging.getLogger("components.on_device")
SCORE_SPLIT = "test"
DECODE_BATCH = 32  # photos decoded per graph run while scoring
PREPROCESSING = ("RGB values 0-255 of one photo, the whole photo resized to the input's size "
                 "(bilinear, no crop); the model rescales them itself")


def split_pixels(pattern: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The test split as a phone gives photos to the on-device model.

    Args:
      pattern: TFRecord files of tf.Examples (the Examples' test split).
      image_size: the forms' input side.

    Returns:
      (uint8 pixels [N, size, size, 3], int64 labels [N]).
    """
    spec = feature_spec(features.IMAGE_KEY, features.LABEL_KEY)
    pixels, labels = [], []
    for batch in record_dataset(pattern).batch(DECODE_BATCH):
        parsed = tf.io.parse_example(batch, spec)
        pixels.append(device_pixels(parsed[features.IMAGE_KEY], image_size).numpy())
        labels.append(parsed[features.LABEL_KEY].numpy())
    if not pixels:
        raise ValueError(f"no test examples in {pattern}")
    return np.concatenate(pixels), np.concatenate(labels).reshape(-1)


def judge_forms(tflite_dir: str, pixels: np.ndarray, labels: np.ndarray,
                saved_model_accuracy: float, max_drop: float) -> dict[str, dict[str, Any]]:
    """Scores every form in tflite_dir and judges it against the SavedModel's accuracy.

    Args:
      tflite_dir: the Trainer's on-device models (trainer.tflite_export).
      pixels: uint8 [N, size, size, 3] test photos (split_pixels).
      labels: their class indices [N].
      saved_model_accuracy: the SavedModel's accuracy on the same photos (the Evaluator's).
      max_drop: the most a form's accuracy may be below it.

    Returns:
      form -> {"file", "bytes", "accuracy", "interval" ([low, high], 95% Wilson), "photos",
      "drop", "passed", "reason" (why not, else "")}; a form the Trainer did not write is
      recorded as not passed.
    """
    judged = {}
    for form in TFLITE_FORMS:
        path = os.path.join(tflite_dir, tflite_file(form))
        if not tf.io.gfile.exists(path):
            judged[form] = {"file": tflite_file(form), "passed": False,
                            "reason": "the Trainer wrote no such model"}
            continue
        with tf.io.gfile.GFile(path, "rb") as f:
            flatbuffer = f.read()
        predicted = tflite_probabilities(flatbuffer, pixels).argmax(axis=1)
        right = int((predicted == labels).sum())
        accuracy = right / len(labels)
        drop = saved_model_accuracy - accuracy
        passed = not exceeds_max_drop(drop, max_drop)
        judged[form] = {
            "file": tflite_file(form), "bytes": len(flatbuffer), "accuracy": accuracy,
            "interval": list(wilson_interval(right, len(labels))), "photos": len(labels),
            "drop": drop, "passed": passed,
            "reason": "" if passed else (
                f"test accuracy {accuracy:.4f} on {len(labels)} photos is {drop:.4f} below the "
                f"SavedModel's {saved_model_accuracy:.4f}; at most {max_drop:g} is allowed")}
    return judged


def write_pushed_model(serving_dir: str, tflite_dir: str, out_dir: str,
                       record: dict[str, Any]) -> None:
    """The model to push: the SavedModel, and under tflite/ the forms that passed, the labels
    and the record.

    Args:
      serving_dir: the Trainer's SavedModel folder.
      tflite_dir: the Trainer's on-device models.
      out_dir: the output Model's serving folder.
      record: what on_device.json holds (its "forms" say which passed).
    """
    io_utils.copy_dir(serving_dir, out_dir)
    device_dir = os.path.join(out_dir, TFLITE_DIR)
    tf.io.gfile.makedirs(device_dir)
    for name in [LABELS_ASSET] + [entry["file"] for entry in record["forms"].values()
                                  if entry["passed"]]:
        tf.io.gfile.copy(os.path.join(tflite_dir, name), os.path.join(device_dir, name))
    with tf.io.gfile.GFile(os.path.join(device_dir, ON_DEVICE_FILE), "w") as f:
        json.dump(record, f, indent=1)


@component
def OnDeviceGate(  # noqa: N802 (TFX component names are classes)
    model: InputArtifact[Model],
    examples: InputArtifact[Examples],
    evaluation: InputArtifact[ModelEvaluation],
    pushed_model_candidate: OutputArtifact[Model],
    max_accuracy_drop: Parameter[float] = 0.005,
) -> None:
    """Scores the Trainer's TFLite forms on the test split and outputs the model to push.

    Args:
      model: the Trainer's Model (SavedModel in Format-Serving, TFLite forms in Format-TFLite).
      examples: the Examples; the forms are scored on its test split.
      evaluation: the Evaluator's evaluation of the SavedModel on the same split.
      pushed_model_candidate: the SavedModel with tflite/ (the forms that passed).
      max_accuracy_drop: the most a form's test accuracy may be below the SavedModel's.
    """
    serving_dir = path_utils.serving_model_path(model.uri,
                                                path_utils.is_old_model_artifact(model))
    tflite_dir = os.path.join(model.uri, TFLITE_MODEL_DIR)
    with tf.io.gfile.GFile(os.path.join(tflite_dir, LABELS_ASSET)) as f:
        classes = parse_labels(f.read())
    overall = read_evaluation(evaluation.uri, classes)["overall"]
    saved_accuracy = overall.get("accuracy")
    if saved_accuracy is None:
        raise ValueError("the Evaluator recorded no accuracy to judge the on-device models by")
    image_size = _input_side(os.path.join(tflite_dir, tflite_file(TFLITE_FORMS[0])))
    split = os.path.join(artifact_utils.get_split_uri([examples], SCORE_SPLIT), "*")
    pixels, labels = split_pixels(split, image_size)
    forms = judge_forms(tflite_dir, pixels, labels, saved_accuracy, max_accuracy_drop)
    record = {
        "input": {"name": PIXELS_INPUT, "dtype": "uint8", "shape": [1, image_size, image_size, 3],
                  "preprocessing": PREPROCESSING},
        "output": {"name": PROBABILITIES, "dtype": "float32", "shape": [1, len(classes)]},
        "labels": LABELS_ASSET, "max_accuracy_drop": max_accuracy_drop,
        "saved_model": {"accuracy": saved_accuracy, "photos": len(labels),
                        "interval": list(wilson_interval(round(saved_accuracy * len(labels)),
                                                         len(labels)))},
        "forms": forms}
    for form, entry in forms.items():
        if entry["passed"]:
            LOG.info("on-device %s: test accuracy %.4f, within %g of the SavedModel's %.4f",
                     form, entry["accuracy"], max_accuracy_drop, saved_accuracy)
        else:
            LOG.warning("on-device %s not pushed: %s", form, entry["reason"])
    write_pushed_model(serving_dir, tflite_dir,
                       path_utils.serving_model_path(pushed_model_candidate.uri), record)


def _input_side(tflite_path: str) -> int:
    """The side of a form's square input image."""
    with tf.io.gfile.GFile(tflite_path, "rb") as f:
        return int(load_interpreter(f.read()).get_input_details()[0]["shape"][1])
