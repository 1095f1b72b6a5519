"""Versions in the local server, as TF Serving handles them: loaded through the session
loader with the warmup file replayed, a version that fails to load reported END with its
error while the previous one keeps serving, TF Serving's default policy (the newest version
only) and its AvailabilityPreservingPolicy, labels and policies from a models.config re-read
on change, and the command line. The core's bookkeeping is tested with a fake loader; the
rest loads real exports (the exported_model fixture and one more untrained export) and
talks to the server over loopback sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import keras
import numpy as np
import pytest
import requests
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.client import GrpcClient, RestClient
from serving.errors import InvalidArgument, NotFound, code_name
from serving.server import rest_json
from serving.server.app import LocalServer
from serving.server.core import ModelStore, State, aspired_versions
from serving.server.loader import LoadError
from serving.server.rest_api import handle
from tests.conftest import (
    MODEL_NAME,
    REPO,
    SMALL_IMAGE_SIZE,
    export_untrained,
    small_model_config,
    validation_photos,
)
from tests.lenient_export import export_lenient_only
from tests.serving_helpers import (
    ATOL,
    b64,
    free_port,
    grpc_request,
    in_process,
    push_version,
    rest_states,
    wait_for,
)
from trainer.model import build_model
from trainer.warmup import write_warmup_requests

# --- the core, with a fake loader ------------------------------------------------------------


class FakeModel:
    def __init__(self, path: str):
        self.path, self.closed = path, False

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads versions instantly; a version holding a file named `broken` fails to load."""

    def __init__(self) -> None:
        self.loads: list[int] = []
        self.models: dict[int, FakeModel] = {}

    def __call__(self, path: str) -> tuple[FakeModel, int]:
        version = int(Path(path).name)
        self.loads.append(version)
        if Path(path, "broken").exists():
            raise LoadError(f"version {version}: Could not find variable x",
                            grpc.StatusCode.FAILED_PRECONDITION)
        self.models[version] = FakeModel(path)
        return self.models[version], 0


def write_version(base: Path, version: int, files: dict[str, str] | None = None) -> None:
    for name, text in (files or {"saved_model.pb": f"v{version}"}).items():
        (base / str(version) / name).parent.mkdir(parents=True, exist_ok=True)
        (base / str(version) / name).write_text(text)


def served(store: ModelStore, name: str = "m", **choice: Any) -> int:
    """The version answering a request for the model (latest, version= or version_label=)."""
    spec = model_pb2.ModelSpec(name=name)
    if "version" in choice:
        spec.version.value = choice["version"]
    if "version_label" in choice:
        spec.version_label = choice["version_label"]
    with store.servable(spec) as (version, _):
        return version


def states(store: ModelStore) -> dict[int, tuple[str, str]]:
    """{version: (state, error code)} from GetModelStatus, in its order (newest first)."""
    response = store.model_status(get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="m")))
    return {s.version: (State.Name(s.state), code_name(s.status.error_code))
            for s in response.model_version_status}


def write_config(path: Path, policy: str, labels: dict[str, int] | None = None) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name="m", base_path="/models/m")
    text_format.Parse(policy, model.model_version_policy)
    model.version_labels.update(labels or {})
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text_format.MessageToString(config))
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # a change, however coarse the clock


def test_without_a_config_only_the_newest_complete_version_is_served(tmp_path):
    loader = FakeLoader()
    write_version(tmp_path, 1)
    store = ModelStore(str(tmp_path), "m", loader=loader)
    store.poll(first=True)
    assert (store.versions, served(store)) == ([1], 1)
    write_version(tmp_path, 2, {"variables/v": "no graph yet"})
    store.poll()
    write_version(tmp_path, 2, {"saved_model.pb": "v2"})
    store.poll()  # complete now, but changed since the previous poll: it may still be copying
    assert store.versions == [1]
    store.poll()  # unchanged since the previous poll: loaded, and version 1 goes
    assert (store.versions, served(store), loader.models[1].closed) == ([2], 2, True)
    assert states(store) == {2: ("AVAILABLE", "OK"), 1: ("END", "OK")}
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 1\)$"):
        served(store, version=1)
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(other\)$"):
        served(store, name="other")


def test_a_version_that_fails_to_load_is_end_and_the_previous_one_keeps_serving(tmp_path):
    loader = FakeLoader()
    write_version(tmp_path, 1)
    store = ModelStore(str(tmp_path), "m", loader=loader)
    store.poll(first=True)
    write_version(tmp_path, 2, {"saved_model.pb": "v2", "broken": "1"})
    for _ in range(4):
        store.poll()
    assert loader.loads == [1, 2]  # not retried while its files stay the same
    assert states(store) == {2: ("END", "FAILED_PRECONDITION"), 1: ("AVAILABLE", "OK")}
    (entry,) = [s for s in store.model_status(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "m", "version": {"value": 2}})).model_version_status]
    assert "Could not find variable" in entry.status.error_message
    assert (store.versions, served(store)) == ([1], 1)
    write_version(tmp_path, 2, {"broken": "2"})  # a new push into the same directory
    store.poll()
    store.poll()
    assert loader.loads == [1, 2, 2]
    (tmp_path / "2" / "broken").unlink()
    store.poll()
    store.poll()
    assert (store.versions, served(store), loader.models[1].closed) == ([2], 2, True)


def test_availability_preserving_unloading_with_two_versions(tmp_path):
    """latest 2: a failed newest version still counts as aspired, so the oldest goes once the
    other aspired version is available (TF Serving's AvailabilityPreservingPolicy)."""
    loader = FakeLoader()
    config = tmp_path / "models.config"
    write_config(config, "latest { num_versions: 2 }")
    base = tmp_path / "m"
    for version in (1, 2):
        write_version(base, version)
    store = ModelStore(str(base), "m", str(config), loader=loader)
    store.poll(first=True)
    assert store.versions == [1, 2]
    write_version(base, 3, {"saved_model.pb": "v3", "broken": ""})
    store.poll()
    store.poll()
    assert store.versions == [2]
    assert states(store) == {3: ("END", "FAILED_PRECONDITION"), 2: ("AVAILABLE", "OK"),
                             1: ("END", "OK")}


def test_unloading_waits_for_the_requests_holding_a_version_then_closes_it(tmp_path):
    loader = FakeLoader()
    write_version(tmp_path, 1)
    store = ModelStore(str(tmp_path), "m", loader=loader)
    store.poll(first=True)
    write_version(tmp_path, 2)
    store.poll()
    with store.servable(model_pb2.ModelSpec(name="m")) as (version, model):
        poller = threading.Thread(target=store.poll)
        poller.start()  # loads version 2, then waits to unload version 1
        wait_for(lambda: states(store)[1][0] == "UNLOADING", "version 1 unloading", 10)
        assert (version, model.closed, served(store)) == (1, False, 2)
        assert poller.is_alive()
    poller.join(10)
    assert model.closed and states(store)[1] == ("END", "OK")


class FakeSignatureModel(FakeModel):
    """A version with one float input; running it answers with its version number."""

    signature_defs = {"serving_default": meta_graph_pb2.SignatureDef(inputs={
        "x": meta_graph_pb2.TensorInfo(name="x:0", dtype=types_pb2.DT_FLOAT)})}

    def run(self, signature_name: str, inputs: dict, output_filter: Any) -> dict:
        return {"version": np.array([int(Path(self.path).name)] * len(inputs["x"]))}


def test_a_rest_request_runs_on_the_version_its_json_was_read_for(tmp_path, monkeypatch):
    """REST reads the JSON by the signature's dtypes; a version that becomes available
    meanwhile must not be the one that runs it (gRPC holds one version too)."""
    models: dict[int, FakeSignatureModel] = {}

    def load(path: str) -> tuple[FakeSignatureModel, int]:
        models[int(Path(path).name)] = FakeSignatureModel(path)
        return models[int(Path(path).name)], 0

    write_version(tmp_path, 1)
    store = ModelStore(str(tmp_path), "m", loader=load)
    store.poll(first=True)
    decode = rest_json.decode_inputs
    pollers = []

    def decode_then_publish_version_2(doc: Any, signature_inputs: Any) -> Any:
        decoded = decode(doc, signature_inputs)
        write_version(tmp_path, 2)
        pollers.append(threading.Thread(target=lambda: (store.poll(), store.poll())))
        pollers[0].start()  # loads version 2, then waits for this request to unload 1
        wait_for(lambda: states(store).get(2, ("",))[0] == "AVAILABLE", "version 2", 10)
        return decoded

    monkeypatch.setattr(rest_json, "decode_inputs", decode_then_publish_version_2)
    body = handle(store, "POST", "/v1/models/m:predict", b'{"instances": [1.0, 2.0]}')
    assert json.loads(body) == {"predictions": [1, 1]}
    pollers[0].join(10)
    assert served(store) == 2 and models[1].closed


def test_a_models_config_sets_policy_and_labels_and_is_re_read(tmp_path):
    loader = FakeLoader()
    config = tmp_path / "models.config"
    write_config(config, "specific { versions: 1 versions: 3 }", {"stable": 1, "canary": 3})
    base = tmp_path / "m"
    for version in (1, 2, 3):
        write_version(base, version)
    store = ModelStore(str(base), "m", str(config), loader=loader)
    store.poll(first=True)
    assert store.versions == [1, 3]
    assert (served(store, version_label="stable"), served(store, version_label="canary")) == (
        1, 3)
    with pytest.raises(InvalidArgument, match="^Unrecognized servable version label: nope$"):
        served(store, version_label="nope")
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: stable"):
        served(store, name="other", version_label="stable")  # labels are per model
    with pytest.raises(InvalidArgument, match="^ModelSpec has no name specified.$"):
        served(store, name="")
    write_config(config, "all {}", {"stable": 2})
    store.poll()
    assert store.versions == [1, 2, 3] and served(store, version_label="stable") == 2
    config.write_text("model_config_list { config { name: ")  # a broken edit: the old config stays
    with pytest.raises(ValueError):
        store.poll()
    assert served(store, version_label="stable") == 2
    write_config(config, "all {}", {"stable": 7})  # a label of a version that is not loaded
    store.poll()
    with pytest.raises(NotFound, match=r"Specific\(m, 7\)"):
        served(store, version_label="stable")


def test_version_policies_choose_as_tf_serving_s_file_system_source():
    def aspired(policy: str) -> set[int]:
        config = model_server_config_pb2.ModelConfig(name="m")
        text_format.Parse(policy, config.model_version_policy)
        return aspired_versions(config, [1, 5, 3])

    assert aspired("") == {5}  # no policy: the newest only
    assert aspired("latest {}") == {5}  # num_versions 0 means 1
    assert aspired("latest { num_versions: 2 }") == {3, 5}
    assert aspired("all {}") == {1, 3, 5}
    assert aspired("specific { versions: 1 versions: 4 }") == {1}


# --- real versions over sockets --------------------------------------------------------------

@pytest.fixture(scope="module")
def second_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another untrained export (other weights, classes renamed): a new push."""
    return export_untrained(tmp_path_factory.mktemp("second") / "1", ["CATS", "DOGS"], seed=8)


def lenient_version(base: Path, version: int) -> Path:
    """The export TF Serving rejects, with the warmup file every export carries: TF Serving
    replays it at load, where the missing variables fail (without one, the version would be
    AVAILABLE and every Predict would fail)."""
    keras.utils.set_random_seed(1)
    model = build_model(2, small_model_config())
    staging = export_lenient_only(model, SMALL_IMAGE_SIZE, str(base.parent / "lenient"))
    write_warmup_requests(staging, [validation_photos()[0][0].read_bytes()], MODEL_NAME)
    shutil.copytree(staging, base / str(version))
    return base / str(version)


def rest_predict(rest_url: str, images: list[bytes], pin: str = "") -> requests.Response:
    return requests.post(f"{rest_url}/v1/models/{MODEL_NAME}{pin}:predict",
                         json={"instances": [b64(image) for image in images]}, timeout=60)


def assert_answers_like(response: requests.Response, expected: dict[str, np.ndarray]) -> None:
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected["probabilities"],
                               atol=ATOL)
    assert [r["class_name"] for r in rows] == [n.decode() for n in expected["class_name"]]


def test_a_lenient_export_is_rejected_and_a_new_version_replaces_the_old_one(
        exported_model, second_export, images, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(exported_model.base_path, base)
    first = in_process(exported_model.version_dir, images)
    second = in_process(second_export, images)
    assert np.abs(first["probabilities"] - second["probabilities"]).max() > 1e-3
    with LocalServer(str(base), grpc_port=0, rest_port=0, poll_seconds=0.2) as server:
        url = server.rest_url
        assert rest_states(url) == {1: "AVAILABLE"}
        lenient_version(base, 2)
        wait_for(lambda: rest_states(url).get(2) == "END", "version 2 to fail")
        status = requests.get(f"{url}/v1/models/{MODEL_NAME}/versions/2", timeout=30).json()
        (entry,) = status["model_version_status"]
        assert entry["status"]["error_code"] == "FAILED_PRECONDITION"
        assert "Could not find variable" in entry["status"]["error_message"]
        assert rest_states(url) == {2: "END", 1: "AVAILABLE"}
        assert_answers_like(rest_predict(url, images), first)  # version 1 keeps answering
        refused = rest_predict(url, images, "/versions/2")
        assert (refused.status_code, refused.json()["error"]) == (
            404, f"Servable not found for request: Specific({MODEL_NAME}, 2)")

        push_version(second_export, base, 3)
        wait_for(lambda: rest_states(url) == {3: "AVAILABLE", 2: "END", 1: "END"},
                 "version 3 to replace version 1")  # newest first, as TF Serving lists them
        assert_answers_like(rest_predict(url, images), second)
        assert rest_predict(url, images, "/versions/1").status_code == 404
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(grpc_request(images), timeout=60).model_spec.version.value == 3
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(grpc_request(images, version=1), timeout=60)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL_NAME}),
                timeout=30)
        assert [(s.version, s.status.error_code) for s in response.model_version_status] == [
            (3, 0), (2, grpc.StatusCode.FAILED_PRECONDITION.value[0]), (1, 0)]


def server_process(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "serving.server", *args], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT)


def test_config_file_versions_labels_and_hot_pickup_in_a_server_process(
        exported_model, second_export, images, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(exported_model.base_path, base)
    push_version(second_export, base, 2)
    config = text_format.Parse((REPO / "serving" / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    model = config.model_config_list.config[0]  # latest { num_versions: 2 }
    model.version_labels["stable"], model.version_labels["canary"] = 1, 2
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(config))
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    process = server_process(["--model-base-path", str(base), "--grpc-port", str(grpc_port),
                              "--rest-port", str(rest_port), "--model-config-file",
                              str(config_file), "--poll-seconds", "0.3"], log)
    grpc_target, rest_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"

    def answer(client_class: type, target: str, **pin: Any) -> tuple[str, int | None]:
        with client_class(target, timeout=60, **pin) as client:
            (prediction,) = client.predict(images[:1])
        return prediction.class_name, prediction.model_version

    cat = in_process(exported_model.version_dir, images[:1])["class_name"][0].decode()
    try:
        assert wait_for(lambda: rest_states(rest_url) == {2: "AVAILABLE", 1: "AVAILABLE"},
                        "versions 1 and 2"), log.read_text()
        assert answer(GrpcClient, grpc_target) == (cat.upper(), 2)  # the latest by default
        assert answer(GrpcClient, grpc_target, version=1) == (cat, 1)
        assert answer(GrpcClient, grpc_target, label="stable") == (cat, 1)
        assert answer(RestClient, rest_url, label="canary")[0] == cat.upper()
        with RestClient(rest_url, label="beta") as client, pytest.raises(InvalidArgument):
            client.predict(images[:1])

        push_version(exported_model.version_dir, base, 3, ["cat3", "dog3"])  # a push
        assert wait_for(lambda: rest_states(rest_url) == {3: "AVAILABLE", 2: "AVAILABLE",
                                                          1: "END"}, "version 3")
        assert answer(RestClient, rest_url)[0] in ("cat3", "dog3")
        with RestClient(rest_url, version=1) as gone, pytest.raises(NotFound):
            gone.predict(images[:1])  # unloaded: the policy keeps the newest two

        model.version_labels["stable"] = 2  # promote the canary: edit the config file
        config_file.write_text(text_format.MessageToString(config))
        assert wait_for(lambda: answer(GrpcClient, grpc_target, label="stable") == (
            cat.upper(), 2), "the moved label", 30)
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_start_up_errors_are_one_line(exported_model, tmp_path):
    def start(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "serving.server", *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    def one_line(result: subprocess.CompletedProcess) -> str:
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.strip().splitlines()[-1]

    missing = tmp_path / "missing"
    assert one_line(start("--model-base-path", str(missing))) == (
        f"error: --model-base-path {missing} is not a directory")
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "other" base_path: "/m" } }')
    assert one_line(start("--model-base-path", str(exported_model.base_path),
                          "--model-config-file", str(config))) == (
        f"error: {config} has no config for model '{MODEL_NAME}'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = start("--model-base-path", str(exported_model.base_path),
                       "--grpc-port", str(free_port()), "--rest-port",
                       str(taken.getsockname()[1]))
    assert "Address already in use" in one_line(in_use)

