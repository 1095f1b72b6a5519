"""The on-device models: conversion, scoring as a phone runs them, and the gate that refuses
a form whose accuracy falls too far below the SavedModel's."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.on_device import judge_forms, split_pixels
from contract.artifacts import TFLITE_FORMS, tflite_file
from contract.interface import LABELS_ASSET, PIXELS_INPUT
from contract.labels import parse_labels
from tests.conftest import MINI, SMALL_IMAGE_SIZE, small_model_config
from trainer.export import probabilities_of
from trainer.images import device_pixels
from trainer.model import build_model
from trainer.tflite_export import load_interpreter, tflite_probabilities, write_tflite_models

pytestmark = pytest.mark.slow
CLASSES = ["cats", "dogs"]


def _photos(split: str) -> tuple[list[bytes], np.ndarray]:
    paths = sorted((MINI / split).glob("*/*.jpg"))
    return ([p.read_bytes() for p in paths],
            np.array([CLASSES.index(p.parent.name) for p in paths]))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """An untrained small model (ImageNet base, random head), seeded."""
    keras.utils.set_random_seed(7)
    return build_model(len(CLASSES), small_model_config())


@pytest.fixture(scope="module")
def forms(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tflite")
    write_tflite_models(model, CLASSES, SMALL_IMAGE_SIZE, _photos("train")[0], str(out))
    return out


@pytest.fixture(scope="module")
def validation() -> tuple[np.ndarray, np.ndarray]:
    """The mini set's 40 validation photos as the device gets them, and their labels."""
    encoded, labels = _photos("validation")
    return device_pixels(tf.constant(encoded), SMALL_IMAGE_SIZE).numpy(), labels


def _keras_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    return probabilities_of(model(pixels.astype(np.float32), training=False)).numpy()


def test_forms_take_pixels_and_give_probabilities(forms: Path) -> None:
    assert parse_labels((forms / LABELS_ASSET).read_text()) == CLASSES
    for form in TFLITE_FORMS:
        interpreter = load_interpreter((forms / tflite_file(form)).read_bytes())
        (image,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert PIXELS_INPUT in image["name"]
        assert image["dtype"] == np.uint8
        assert list(image["shape"]) == [1, SMALL_IMAGE_SIZE, SMALL_IMAGE_SIZE, 3]
        assert output["dtype"] == np.float32 and list(output["shape"]) == [1, len(CLASSES)]
    # Full-integer: every tensor is int8 (int32 biases) but the uint8 input, its cast to
    # float32 before the first quantize, and the float32 output.
    details = load_interpreter((forms / tflite_file("int8")).read_bytes()).get_tensor_details()
    other = [t for t in details if t["dtype"] not in (np.int8, np.int32)]
    assert len(other) <= 3, [(t["name"], t["dtype"]) for t in other]
    assert sum(t["dtype"] == np.int8 for t in details) > 50
    assert ((forms / tflite_file("int8")).stat().st_size
            < (forms / tflite_file("float16")).stat().st_size)


def test_forms_answer_as_the_keras_model(model: keras.Model, forms: Path,
                                         validation: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, _ = validation
    reference = _keras_probabilities(model, pixels)
    float16 = tflite_probabilities((forms / tflite_file("float16")).read_bytes(), pixels)
    int8 = tflite_probabilities((forms / tflite_file("int8")).read_bytes(), pixels)
    assert float16.shape == int8.shape == reference.shape == (40, 2)
    np.testing.assert_allclose(float16.sum(axis=1), 1, atol=1e-5)
    # float16 rounds every weight: on this untrained head, up to about 0.02 of probability.
    assert np.abs(float16 - reference).max() < 0.05
    assert (float16.argmax(1) == reference.argmax(1)).mean() >= 0.95
    # int8 quantizes every activation: larger errors (on this untrained head up to about
    # 0.2 of probability), still close to the float model on average.
    assert np.abs(int8 - reference).mean() < 0.1
    assert (int8.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_gate_passes_close_forms_and_refuses_a_model_made_to_fail(
        model: keras.Model, forms: Path, validation: tuple[np.ndarray, np.ndarray],
        tmp_path: Path) -> None:
    pixels, _ = validation
    # Judged on the Keras model's own answers, the SavedModel's accuracy is 1 by construction.
    answers = _keras_probabilities(model, pixels).argmax(1)
    judged = judge_forms(str(forms), pixels, answers, 1.0, max_drop=0.1)
    for form in TFLITE_FORMS:
        entry = judged[form]
        agreement = (tflite_probabilities((forms / tflite_file(form)).read_bytes(), pixels)
                     .argmax(1) == answers).mean()
        assert entry["accuracy"] == pytest.approx(agreement)
        assert entry["photos"] == 40 and entry["drop"] == pytest.approx(1 - agreement)
        assert entry["interval"][0] <= entry["accuracy"] <= entry["interval"][1]
        assert entry["passed"] and entry["reason"] == ""
        assert entry["bytes"] == (forms / tflite_file(form)).stat().st_size

    # The same model with its logit negated answers the other class for every photo.
    flipped = keras.models.clone_model(model)
    flipped.set_weights(model.get_weights())
    logits = flipped.get_layer("logits")
    logits.set_weights([-w for w in logits.get_weights()])
    write_tflite_models(flipped, CLASSES, SMALL_IMAGE_SIZE, _photos("train")[0][:8],
                        str(tmp_path))
    refused = judge_forms(str(tmp_path), pixels, answers, 1.0, max_drop=0.005)
    for form in TFLITE_FORMS:
        entry = refused[form]
        assert entry["accuracy"] <= 0.1 and not entry["passed"]
        assert f"on 40 photos is {entry['drop']:.4f} below the SavedModel's 1.0000" in entry[
            "reason"]
        assert "at most 0.005 is allowed" in entry["reason"]

    # A drop exactly at the limit passes (as the Evaluator's gate judges it).
    exact = judge_forms(str(forms), pixels, answers, 1.0,
                        max_drop=judged["float16"]["drop"])
    assert exact["float16"]["passed"]


def test_missing_form_is_recorded_not_pushed(forms: Path, tmp_path: Path,
                                             validation: tuple[np.ndarray, np.ndarray]) -> None:
    (tmp_path / tflite_file("float16")).write_bytes((forms / tflite_file("float16")).read_bytes())
    pixels, labels = validation
    judged = judge_forms(str(tmp_path), pixels, labels, 0.5, max_drop=1.0)
    assert judged["float16"]["passed"]
    assert judged["int8"] == {"file": tflite_file("int8"), "passed": False,
                              "reason": "the Trainer wrote no such model"}


def test_split_pixels_reads_the_split(mini_tfrecords, tmp_path: Path) -> None:
    pattern = str(Path(mini_tfrecords.output_dir) / "test" / "*")
    pixels, labels = split_pixels(pattern, SMALL_IMAGE_SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (SMALL_IMAGE_SIZE,
                                                              SMALL_IMAGE_SIZE, 3)
    assert len(pixels) == len(labels) == mini_tfrecords.report["per_split_total"]["test"]
    assert set(labels) <= {0, 1}
    with tf.io.TFRecordWriter(str(tmp_path / "empty.tfrecord")):
        pass
    with pytest.raises(ValueError, match="no test examples"):
        split_pixels(str(tmp_path / "*.tfrecord"), SMALL_IMAGE_SIZE)
