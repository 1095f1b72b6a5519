"""Helpers of the serving tests (test_server_*.py, test_client.py): requests, the reference
outputs (the SavedModel called in-process through TF2's object loader, not the server's
session path), waiting, and laying out versions as the Pusher does."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import portpicker
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from contract.interface import IMAGES_INPUT, LABELS_ASSET, SERVING_SIGNATURE
from contract.labels import format_labels
from serving.errors import ServingError
from tests.conftest import MODEL_NAME

ATOL = 1e-5
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # the in-process servers' limit; 40 photos are 1.5 MB


def in_process(version_dir: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """The version's serving signature called in-process: the reference outputs."""
    signature = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]
    return {k: v.numpy() for k, v in signature(**{IMAGES_INPUT: tf.constant(images)}).items()}


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def assert_outputs(outputs: dict[str, Any], reference: dict[str, np.ndarray],
                   rows: list[int]) -> None:
    np.testing.assert_allclose(np.asarray(outputs["probabilities"]),
                               reference["probabilities"][rows], atol=ATOL)
    assert list(outputs["class_index"]) == reference["class_index"][rows].tolist()
    assert [n.decode() if isinstance(n, bytes) else n for n in outputs["class_name"]] == [
        n.decode() for n in reference["class_name"][rows]]


def rest_columns(response: requests.Response) -> dict[str, list]:
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    return {name: [row[name] for row in rows] for name in rows[0]}


def grpc_request(images: list[bytes], name: str = MODEL_NAME, version: int | None = None,
                 label: str = "", signature: str = "", input_name: str = IMAGES_INPUT
                 ) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    return request


def rest_states(rest_url: str, model: str = MODEL_NAME) -> dict[int, str]:
    """{version: state} from REST model status."""
    response = requests.get(f"{rest_url}/v1/models/{model}", timeout=30)
    response.raise_for_status()
    return {int(s["version"]): s["state"] for s in response.json()["model_version_status"]}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    """Polls condition until it returns something true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
            if result:
                return result
        except (ServingError, requests.RequestException):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    return portpicker.pick_unused_port()


def push_version(source: Path, base: Path, version: int,
                 class_names: list[str] | None = None) -> Path:
    """Copies a version dir into base as `version`, file by file like the Pusher, after
    renaming its classes (the labels asset) so that answers show which version gave them."""
    staging = base.parent / f"staging-{base.name}-{version}"
    shutil.copytree(source, staging)
    if class_names:
        (staging / "assets" / LABELS_ASSET).write_text(format_labels(class_names))
    shutil.copytree(staging, base / str(version))
    shutil.rmtree(staging)
    return base / str(version)
