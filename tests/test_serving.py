"""Serving: the TF Serving files, the warmup file, the local server's gRPC and REST APIs and the
clients and CLI, over real loopback sockets, on the model the pipeline pushed."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import portpicker
import pytest
import requests
import tensorflow as tf
import yaml
from google.protobuf import descriptor_pb2, message_factory, text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.client import GrpcClient, RestClient, ServingClient
from serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RequestTooLarge,
    ServingError,
    Unavailable,
)
from serving.local_server import LocalServer, parse_labels
from serving.model_store import AVAILABLE, END, ModelStore
from serving.servable import LoadError, Servable
from serving.warmup import (
    WARMUP_PATH,
    read_encoded_images,
    read_warmup_requests,
    write_warmup_requests,
)
from tests.conftest import MODEL_NAME, REPO, validation_photos
from contract import interface

SERVING = REPO / "serving"
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # the in-process server's limit; 40 photos are 1.5 MB
ATOL = 1e-5


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def version_dir(pipeline_run) -> Path:
    (version,) = [p for p in pipeline_run.model_base_path.iterdir() if p.name.isdigit()]
    return version


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [path.read_bytes() for path, _ in validation_photos()]


def in_process(version_dir: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(str(version_dir)).signatures[interface.SERVING_SIGNATURE]
    return {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}


@pytest.fixture(scope="module")
def reference(version_dir: Path, photos: list[bytes]) -> dict[str, np.ndarray]:
    """The pushed model's outputs for the 40 validation photos, called in-process."""
    return in_process(version_dir, photos)


@pytest.fixture(scope="module")
def server(pipeline_run) -> Iterator[LocalServer]:
    """The local server on the pipeline's model base path (read only), on free ports."""
    with LocalServer(str(pipeline_run.model_base_path), grpc_port=0, rest_port=0,
                     max_request_bytes=MAX_REQUEST_BYTES) as local:
        yield local


def make_client(kind: str, server: LocalServer, **kwargs: Any) -> ServingClient:
    if kind == "grpc":
        return GrpcClient(server.grpc_address, **kwargs)
    return RestClient(server.rest_url, **kwargs)


def assert_matches(predictions, reference: dict[str, np.ndarray], rows: list[int]) -> None:
    assert len(predictions) == len(rows)
    for p, row in zip(predictions, rows, strict=True):
        np.testing.assert_allclose(p.probabilities, reference["probabilities"][row], atol=ATOL)
        assert p.class_name == reference["class_name"][row].decode()
        assert p.class_index == reference["class_index"][row]
        assert p.probability == pytest.approx(max(p.probabilities))


def free_port() -> int:
    return portpicker.pick_unused_port()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
            if result:
                return result
        except ServingError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- the files for tensorflow/serving --------------------------------------------------------

def test_models_config_is_a_valid_model_server_config():
    config = text_format.Parse((SERVING / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        MODEL_NAME, "/models/image_classifier", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 2


def batching_parameters_class() -> type:
    """tensorflow_serving's BatchingParameters (session_bundle_config.proto), which the pip
    package does not ship: the fields the file may use, with their types."""
    wrappers = {"max_batch_size": "Int64Value", "batch_timeout_micros": "Int64Value",
                "max_enqueued_batches": "Int64Value", "num_batch_threads": "Int64Value",
                "thread_pool_name": "StringValue"}
    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    message = descriptor_pb2.DescriptorProto(name="BatchingParameters")
    for number, (name, wrapper) in enumerate(wrappers.items(), 1):
        message.field.add(name=name, number=number, type=F.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{wrapper}", label=F.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64,
                      label=F.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL,
                      label=F.LABEL_OPTIONAL)
    file = descriptor_pb2.FileDescriptorProto(
        name="test_batching.proto", package="test_serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"], message_type=[message])
    from google.protobuf import descriptor_pool, wrappers_pb2  # noqa: F401 (registers wrappers)

    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName("test_serving.BatchingParameters")
    except KeyError:
        descriptor = pool.Add(file).message_types_by_name["BatchingParameters"]
    return message_factory.GetMessageClass(descriptor)


def test_batching_config_is_valid_batching_parameters():
    params = text_format.Parse((SERVING / "batching.config").read_text(),
                               batching_parameters_class()())
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0 and params.num_batch_threads.value >= 1


def test_docker_compose_serves_the_pushed_directory_with_the_config_files():
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    client_version = importlib.metadata.version("tensorflow-serving-api")
    assert service["image"] == f"tensorflow/serving:{client_version}"
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in service["volumes"]}
    assert mounts["/models"] == "${SERVING_DIR:-../outputs/serving}"
    flags = dict(f.removeprefix("--").split("=", 1) for f in service["command"])
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    for flag, name in (("model_config_file", "models.config"),
                       ("batching_parameters_file", "batching.config")):
        assert mounts[flags[flag]] == f"./{name}", flag


# --- predictions -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_predictions_equal_the_in_process_model(kind, server, version_dir, photos, reference):
    with make_client(kind, server) as client:
        assert_matches(client.predict(photos), reference, list(range(len(photos))))
        single = client.predict([photos[3]])
        assert_matches(single, reference, [3])
        expected_version = int(version_dir.name) if kind == "grpc" else None
        assert single[0].model_version == expected_version
        assert client.predict([]) == []


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_status_and_metadata(kind, server, version_dir):
    with make_client(kind, server) as client:
        (status,) = client.status()
        assert (status.version, status.state, status.error_code) == (
            int(version_dir.name), "AVAILABLE", "OK")
        metadata = client.metadata()
    assert metadata["model_spec"]["name"] == MODEL_NAME
    assert metadata["model_spec"]["version"] == version_dir.name
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    serving = signatures["serving_default"]
    assert serving["inputs"]["images"]["dtype"] == "DT_STRING"
    assert set(serving["outputs"]) == {"probabilities", "class_index", "class_name"}
    assert "positive_probability" in signatures["from_examples"]["outputs"]


def test_rest_and_grpc_metadata_are_the_same_json(server):
    with GrpcClient(server.grpc_address) as g, RestClient(server.rest_url) as r:
        assert g.metadata() == r.metadata()


def rest_predict(server: LocalServer, body: Any, path: str = MODEL_NAME) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server.rest_url}/v1/models/{path}:predict", data=data, timeout=30)


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_rest_accepts_named_rows_and_columns(server, photos, reference):
    named = rest_predict(server, {"instances": [{"images": b64(photos[0])},
                                                {"images": b64(photos[1])}]})
    assert named.status_code == 200, named.text
    rows = named.json()["predictions"]
    assert [r["class_name"] for r in rows] == [n.decode() for n in reference["class_name"][:2]]
    np.testing.assert_allclose([r["probabilities"] for r in rows],
                               reference["probabilities"][:2], atol=ATOL)
    columns = rest_predict(server, {"inputs": {"images": [b64(photos[2]), b64(photos[3])]}})
    assert columns.status_code == 200, columns.text
    outputs = columns.json()["outputs"]  # the columnar answer, as TF Serving gives it
    assert outputs["class_index"] == reference["class_index"][2:4].tolist()
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"][2:4],
                               atol=ATOL)


def grpc_request(images: list[bytes], name: str = MODEL_NAME, version: int | None = None,
                 label: str = "", signature: str = "", input_name: str = "images"
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


def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(
        server, photos, reference):
    good, oversized = photos[0], photos[0] + b"\0" * MAX_REQUEST_BYTES
    channel = grpc.insecure_channel(server.grpc_address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    grpc_cases = {
        "unknown model": (grpc_request([good], name="nope"), grpc.StatusCode.NOT_FOUND),
        "unknown version": (grpc_request([good], version=7), grpc.StatusCode.NOT_FOUND),
        "unknown label": (grpc_request([good], label="canary"), grpc.StatusCode.NOT_FOUND),
        # TF Serving's Predict answers an unknown signature with FAILED_PRECONDITION.
        "unknown signature": (grpc_request([good], signature="nope"),
                              grpc.StatusCode.FAILED_PRECONDITION),
        "non-image bytes": (grpc_request([good, b"GIF89a but not really"]),
                            grpc.StatusCode.INVALID_ARGUMENT),
        "wrong input name": (grpc_request([good], input_name="image"),
                             grpc.StatusCode.INVALID_ARGUMENT),
        "oversized": (grpc_request([oversized]), grpc.StatusCode.RESOURCE_EXHAUSTED),
    }
    for case, (request, code) in grpc_cases.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
        assert error.value.code() == code, (case, error.value.details())
        response = stub.Predict(grpc_request([good]), timeout=30)  # still serving
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"])[0],
                                   reference["probabilities"][0], atol=ATOL)
    channel.close()

    rest_cases = {
        "unknown model": ("nope", {"instances": [b64(good)]}, 404),
        "unknown version": (f"{MODEL_NAME}/versions/7", {"instances": [b64(good)]}, 404),
        "unknown label": (f"{MODEL_NAME}/labels/canary", {"instances": [b64(good)]}, 404),
        "unknown signature": (MODEL_NAME, {"signature_name": "nope",
                                           "instances": [b64(good)]}, 400),
        "non-image bytes": (MODEL_NAME, {"instances": [b64(b"plain text")]}, 400),
        "bad base64": (MODEL_NAME, {"instances": [{"b64": "not base64!"}]}, 400),
        "not JSON": (MODEL_NAME, b"{instances", 400),
        "no instances": (MODEL_NAME, {"images": [b64(good)]}, 400),
        "oversized": (MODEL_NAME, {"instances": [b64(oversized)]}, 413),
    }
    for case, (path, body, status) in rest_cases.items():
        response = rest_predict(server, body, path)
        assert response.status_code == status, (case, response.text)
        assert set(response.json()) == {"error"} and response.json()["error"], case
        ok = rest_predict(server, {"instances": [b64(good)]})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["class_name"] == (
            reference["class_name"][0].decode())
    assert "base64" in rest_predict(server, rest_cases["bad base64"][1]).json()["error"]
    assert "image" in rest_predict(server, rest_cases["non-image bytes"][1]).json()["error"]
    unknown = requests.get(f"{server.rest_url}/v1/models/nope/metadata", timeout=30)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert requests.get(f"{server.rest_url}/v2/what", timeout=30).status_code == 400


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_client_errors(kind, server, photos):
    closed = free_port()
    target = f"127.0.0.1:{closed}" if kind == "grpc" else f"http://127.0.0.1:{closed}"
    client_class = GrpcClient if kind == "grpc" else RestClient
    with client_class(target, timeout=5) as unreachable:
        with pytest.raises(Unavailable, match="cannot reach"):
            unreachable.predict([photos[0]])
        # Checked locally: the error names the image, not the missing server.
        with pytest.raises(InvalidArgument, match="image 1 is not a JPEG, PNG, GIF or BMP"):
            unreachable.predict([photos[0], b"%PDF-1.4"])
    with make_client(kind, server, max_request_bytes=100_000) as small:
        with pytest.raises(RequestTooLarge, match="100000"):
            small.predict(photos[:10])
        assert len(small.predict(photos[:1])) == 1
    with make_client(kind, server) as client, pytest.raises(RequestTooLarge):
        client.predict([photos[0] + b"\0" * MAX_REQUEST_BYTES])  # refused by the server
    with make_client(kind, server, version=7) as pinned, pytest.raises(NotFound):
        pinned.status()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = f"127.0.0.1:{port}" if kind == "grpc" else f"http://127.0.0.1:{port}"
        with client_class(target, timeout=0.5) as slow, pytest.raises(DeadlineExceeded):
            slow.predict([photos[0]])
    with pytest.raises(ValueError):
        make_client(kind, server, version=1, label="stable")


def test_concurrent_clients_all_succeed(server, photos, reference):
    def worker(index: int) -> list[tuple[int, Any]]:
        kind = "grpc" if index % 2 else "rest"
        with make_client(kind, server, timeout=60) as client:
            rows = [(index * 50 + i) % len(photos) for i in range(50)]
            return [(row, client.predict([photos[row]])[0]) for row in rows]

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = [f.result(timeout=180) for f in [pool.submit(worker, i) for i in range(8)]]
    answers = [answer for result in results for answer in result]
    assert len(answers) == 400
    for row, prediction in answers:
        assert_matches([prediction], reference, [row])
    assert time.monotonic() - started < 180


# --- versions, labels, hot pick-up -----------------------------------------------------------

def add_version(base: Path, source: Path, version: int, class_names: list[str]) -> None:
    """A copy of source as a new version whose labels asset renames the classes, so that
    answers show which version gave them."""
    staging = base.parent / f"staging-{version}"
    shutil.copytree(source, staging)
    (staging / "assets" / "labels.txt").write_text("\n".join(class_names) + "\n")
    shutil.copytree(staging, base / str(version))  # in place, file by file, like the Pusher


def test_versions_labels_and_hot_pickup_in_a_server_process(version_dir, photos, reference,
                                                            tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(version_dir.parent, base)
    v1 = int(version_dir.name)
    v2, v3 = v1 + 1, v1 + 2
    add_version(base, version_dir, v2, ["CATS", "DOGS"])
    config = text_format.Parse((SERVING / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    model = config.model_config_list.config[0]  # latest { num_versions: 2 }
    model.version_labels["stable"], model.version_labels["canary"] = v1, v2
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(config))

    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.local_server", "--model-base-path", str(base),
             "--grpc-port", str(grpc_port), "--rest-port", str(rest_port),
             "--model-config-file", str(config_file), "--poll-seconds", "0.3"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
            stderr=subprocess.STDOUT)
    grpc_target, rest_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"

    def names(client_class: type, target: str, **pin: Any) -> tuple[str, int | None]:
        with client_class(target, **pin) as client:
            (p,) = client.predict([photos[0]])
        return p.class_name, p.model_version

    def available() -> list[int]:
        with RestClient(rest_url) as client:
            return [s.version for s in client.status() if s.state == "AVAILABLE"]

    cat = reference["class_name"][0].decode()
    try:
        assert wait_for(lambda: available() == [v1, v2], "versions 1 and 2", 90), log.read_text()
        assert names(GrpcClient, grpc_target) == (cat.upper(), v2)  # the latest by default
        assert names(GrpcClient, grpc_target, version=v1) == (cat, v1)
        assert names(GrpcClient, grpc_target, label="stable") == (cat, v1)
        assert names(RestClient, rest_url, label="canary")[0] == cat.upper()
        assert names(RestClient, rest_url, version=v1)[0] == cat

        add_version(base, version_dir, v3, ["cat3", "dog3"])  # a push, no restart
        assert wait_for(lambda: available() == [v2, v3], "version 3", 60), log.read_text()
        assert names(RestClient, rest_url)[0] in ("cat3", "dog3")
        with RestClient(rest_url, version=v1) as gone, pytest.raises(NotFound):
            gone.predict([photos[0]])  # unloaded: the policy keeps the newest two
        with RestClient(rest_url) as client:
            assert {s.version: s.state for s in client.status()} == {
                v1: "END", v2: "AVAILABLE", v3: "AVAILABLE"}

        model.version_labels["stable"] = v2  # promote the canary: edit the config file
        config_file.write_text(text_format.MessageToString(config))
        assert wait_for(lambda: names(GrpcClient, grpc_target, label="stable") == (
            cat.upper(), v2), "the moved label", 30)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()


def test_local_server_start_up_errors_are_one_line(pipeline_run, tmp_path):
    def local_server(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "serving.local_server", *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    missing = local_server("--model-base-path", str(tmp_path / "missing"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1] == (
        f"error: --model-base-path {tmp_path / 'missing'} is not a directory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = local_server("--model-base-path", str(pipeline_run.model_base_path),
                              "--grpc-port", str(free_port()),
                              "--rest-port", str(taken.getsockname()[1]))
    assert in_use.returncode == 2 and "Address already in use" in in_use.stderr
    assert "Traceback" not in in_use.stderr


class FakeServable:
    def __init__(self, path: str, version: int):
        self.path, self.version = path, version


def write_version(base: Path, version: int, files: dict[str, str]) -> None:
    for name, text in files.items():
        (base / str(version) / name).parent.mkdir(parents=True, exist_ok=True)
        (base / str(version) / name).write_text(text)


def test_a_version_is_loaded_once_complete_and_unloaded_when_removed(tmp_path):
    loads: list[int] = []

    def loader(path: str, version: int) -> FakeServable:
        loads.append(version)
        if Path(path, "broken").exists():
            raise LoadError(f"version {version} is broken")
        return FakeServable(path, version)

    write_version(tmp_path, 1, {"saved_model.pb": "v1"})
    write_version(tmp_path, 2, {"variables/v": "no graph yet"})
    store = ModelStore(str(tmp_path), "m", loader=loader)
    store.poll(first=True)
    assert store.versions == [1] and store.resolve("m").version == 1
    write_version(tmp_path, 2, {"saved_model.pb": "v2"})
    store.poll()  # complete now, but first seen this poll: it may still be copying
    assert store.versions == [1]
    write_version(tmp_path, 2, {"variables/w": "still copying"})
    store.poll()
    assert store.versions == [1]
    store.poll()  # unchanged since the previous poll
    assert store.versions == [1, 2] and store.resolve("m").version == 2
    write_version(tmp_path, 3, {"saved_model.pb": "v3", "broken": ""})
    store.poll()
    store.poll()
    store.poll()
    assert loads == [1, 2, 3]  # a failed load is not retried while the files stay the same
    (state,) = store.states("m", version=3)
    assert state.state == END and "broken" in state.error
    assert store.resolve("m").version == 2
    shutil.rmtree(tmp_path / "2")
    store.poll()
    assert store.versions == [1]
    with pytest.raises(NotFound):
        store.resolve("m", version=2)
    with pytest.raises(NotFound):
        store.resolve("other")
    assert [s.state for s in store.states("m")] == [AVAILABLE, END]


def test_the_version_policy_unloads_a_version_only_once_its_successor_is_loaded(tmp_path):
    for version in (1, 2):
        write_version(tmp_path, version, {"saved_model.pb": f"v{version}"})
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "/models/m" '
                      "model_version_policy { latest { num_versions: 1 } } } }")
    store = ModelStore(str(tmp_path), "m", config_file=str(config), loader=FakeServable)
    store.poll(first=True)
    assert store.versions == [2]  # latest 1: version 1 is never loaded
    write_version(tmp_path, 3, {"saved_model.pb": "v3"})
    store.poll()  # version 3 is not loaded yet: version 2 keeps serving
    assert store.versions == [2]
    store.poll()
    assert store.versions == [3]
    assert {s.version: s.state for s in store.states("m")} == {2: END, 3: AVAILABLE}


def test_version_labels_flag():
    assert parse_labels("stable=1, canary=22") == {"stable": 1, "canary": 22}
    for bad in ("stable", "stable=x", "=3"):
        with pytest.raises(Exception, match="LABEL=VERSION"):
            parse_labels(bad)


# --- warmup ----------------------------------------------------------------------------------

def test_warmup_requests_from_training_images_replay_through_the_server(
        pipeline_run, server, version_dir, tmp_path):
    train = sorted(pipeline_run.output_dir.glob(
        "pipeline_root/ImportExampleGen/examples/*/Split-train"))
    images = read_encoded_images([str(train[-1] / "*")], count=3)
    assert len(images) == 3 and all(i[:3] == b"\xff\xd8\xff" for i in images)
    expected = in_process(version_dir, images)

    path = write_warmup_requests(str(tmp_path), images, MODEL_NAME)
    assert path == str(tmp_path / WARMUP_PATH)
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [len(log.predict_log.request.inputs["images"].string_val) for log in logs] == [
        1, 1, 1, 3]
    channel = grpc.insecure_channel(server.grpc_address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        assert request.model_spec.signature_name == "serving_default"
        response = stub.Predict(request, timeout=30)
        rows = [images.index(i) for i in request.inputs["images"].string_val]
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                                   expected["probabilities"][rows], atol=ATOL)
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    response = status.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [int(version_dir.name)]
    channel.close()


def test_a_version_replays_its_warmup_file_on_load_and_fails_on_a_bad_one(
        version_dir, photos, tmp_path):
    good, bad = tmp_path / "1", tmp_path / "2"
    shutil.copytree(version_dir, good)
    shutil.copytree(version_dir, bad)
    write_warmup_requests(str(good), photos[:2], MODEL_NAME)
    assert Servable.load(str(good), 1).warmup_requests_replayed == 3
    write_warmup_requests(str(bad), [photos[0], b"BM but not a bitmap"], MODEL_NAME)
    with pytest.raises(LoadError, match="warmup request 2"):
        Servable.load(str(bad), 2)


# --- the command line ------------------------------------------------------------------------

def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """python -m serving.client, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "serving.client", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_predicts_each_image(server, reference):
    paths = [str(p) for p, _ in validation_photos()[:2]]
    text = cli("predict", "--grpc", server.grpc_address, *paths)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    for line, path, name, probs in zip(lines, paths, reference["class_name"][:2],
                                       reference["probabilities"][:2], strict=True):
        shown, label, probability = line.rsplit(" ", 2)
        assert (shown, label) == (f"{path}:", name.decode())
        assert float(probability) == pytest.approx(probs.max(), abs=1e-4)

    machine = cli("predict", "--rest", server.rest_url, "--json", *paths)
    assert machine.returncode == 0, machine.stderr
    answers = json.loads(machine.stdout)
    assert [a["image"] for a in answers] == paths
    np.testing.assert_allclose([a["probabilities"] for a in answers],
                               reference["probabilities"][:2], atol=ATOL)
    assert [a["class_name"] for a in answers] == [n.decode() for n in reference["class_name"][:2]]


def test_cli_status_and_metadata(server, version_dir):
    status = cli("status", "--rest", server.rest_url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == f"{MODEL_NAME} version {version_dir.name}: AVAILABLE"
    metadata = cli("metadata", "--rest", server.rest_url)
    assert metadata.returncode == 0, metadata.stderr
    assert metadata.stdout.splitlines()[0] == f"{MODEL_NAME} version {version_dir.name}"
    assert "  serving_default: images string[None] -> class_index int64[None], " \
           "class_name string[None], probabilities float[None, 2]" in metadata.stdout
    as_json = json.loads(cli("metadata", "--rest", server.rest_url, "--json").stdout)
    assert as_json["model_spec"]["version"] == version_dir.name


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_errors_are_one_line(server, tmp_path):
    photo = str(validation_photos()[0][0])
    closed = free_port()
    assert "cannot reach" in one_line_error(cli("predict", "--grpc", f"127.0.0.1:{closed}",
                                                photo))
    assert "Connection refused" in one_line_error(
        cli("status", "--rest", f"http://127.0.0.1:{closed}"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    message = one_line_error(cli("predict", "--rest", server.rest_url, photo, str(notes)))
    assert message == f"error: {notes} is not a JPEG, PNG, GIF or BMP image"
    assert "No such file" in one_line_error(cli("predict", "--rest", server.rest_url,
                                                str(tmp_path / "missing.jpg")))
    assert "Servable not found" in one_line_error(
        cli("predict", "--rest", server.rest_url, "--model", "nope", photo))
    usage = cli("predict", "--grpc", "x:1", "--rest", "http://x", photo)
    assert usage.returncode == 2 and "not allowed with" in usage.stderr


def test_the_pushed_version_carries_warmup_requests(version_dir):
    logs = read_warmup_requests(str(version_dir / WARMUP_PATH))
    assert [len(log.predict_log.request.inputs["images"].string_val) for log in logs] == [
        1, 1, 1, 1, 4]
    assert Servable.load(str(version_dir), int(version_dir.name)).warmup_requests_replayed == 5
