"""The local server's gRPC and REST APIs over real loopback sockets, on one exported version
(the exported_model fixture, no training): Predict, status and metadata answer as the
SavedModel called in-process does, and what clients get wrong is answered as TF Serving
answers it (status codes and wording from tensorflow/serving's http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc, json_tensor.cc, predict_util.cc, server_core.cc,
get_model_status_impl.cc, classifier.cc and regressor.cc), the server serving on after each."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import math
import re
import socket
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from contract.interface import EXAMPLES_INPUT, EXAMPLES_SIGNATURE, SERVING_SIGNATURE, WARMUP_FILE
from serving.server.app import LocalServer
from serving.server.rest_json import format_float
from tests.conftest import MODEL_NAME
from tests.serving_helpers import (
    MAX_REQUEST_BYTES,
    assert_outputs,
    b64,
    grpc_request,
    rest_columns,
)

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
OK_STATUS = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
    "error_code": "OK", "error_message": ""}}]}


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def post(server: LocalServer, path: str, body: Any, **kwargs: Any) -> requests.Response:
    data = body if isinstance(body, bytes | Iterator) else json.dumps(body).encode()
    return requests.post(f"{server.rest_url}{path}", data=data, timeout=60, **kwargs)


def assert_still_serving(server: LocalServer, stub: Any, images: list[bytes],
                         reference: dict[str, np.ndarray]) -> None:
    response = stub.Predict(grpc_request(images[:1]), timeout=60)
    assert_outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()}, reference, [0])
    assert_outputs(rest_columns(post(server, PREDICT, {"instances": [b64(images[0])]})),
                   reference, [0])


# --- answers ---------------------------------------------------------------------------------

def test_predict_over_grpc_and_rest_equals_the_in_process_model(server, stub, images,
                                                                 reference):
    everything = list(range(len(images)))
    assert np.ptp(reference["probabilities"][:, 1]) > 1e-3  # the images get different answers
    response = stub.Predict(grpc_request(images), timeout=60)
    assert response.model_spec.name == MODEL_NAME and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == SERVING_SIGNATURE  # filled in, as TF Serving
    assert len(response.outputs["probabilities"].float_val) == 2 * len(images)  # typed fields
    assert_outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()}, reference,
                   everything)
    filtered = grpc_request(images[:2])
    filtered.output_filter.append("class_name")
    assert set(stub.Predict(filtered, timeout=60).outputs) == {"class_name"}

    rows = post(server, PREDICT, {"instances": [b64(image) for image in images]})
    assert rows.headers["Content-Type"] == "application/json"
    assert_outputs(rest_columns(rows), reference, everything)
    named = post(server, PREDICT, {"instances": [{"images": b64(i)} for i in images[:2]]})
    assert_outputs(rest_columns(named), reference, [0, 1])
    for inputs in ({"images": [b64(i) for i in images[2:4]]}, [b64(i) for i in images[2:4]]):
        columns = post(server, PREDICT, {"signature_name": SERVING_SIGNATURE, "inputs": inputs})
        assert columns.status_code == 200, columns.text
        assert_outputs(columns.json()["outputs"], reference, [2, 3])


def test_floats_are_written_as_tf_serving_writes_them(server, stub, images):
    body = {"inputs": {"images": [b64(image) for image in images[:8]]}}
    text = post(server, PREDICT, body).text
    tokens = re.findall(r"[-+.\deE]+", re.search(r'"probabilities": (\[.*?\]\])', text,
                                                  re.S)[1])
    assert len(tokens) == 16
    for token in tokens:  # at most float32's 9 significant digits, not float64's 17
        assert len(re.sub(r"e.*|[-.]", "", token.lower()).lstrip("0")) <= 9, token
    served = stub.Predict(grpc_request(images[:8]), timeout=60)
    np.testing.assert_array_equal(np.array(tokens, dtype=np.float32),  # round-trip exactly
                                  np.array(served.outputs["probabilities"].float_val,
                                           dtype=np.float32))
    float32 = {0.1: "0.1", 1 / 3: "0.333333343", 1.0: "1.0", 1e-5: "1e-05", 2e6: "2e+06",
               123456789: "123456792.0", -0.25: "-0.25"}
    for value, written in float32.items():
        assert format_float(float(np.float32(value)), True) == written
        assert np.float32(json.loads(written)) == np.float32(value)
    assert format_float(0.1, False) == "0.1"
    assert format_float(1 / 3, False) == "0.33333333333333331"
    assert [format_float(v, True) for v in (math.nan, math.inf, -math.inf)] == [
        "NaN", "Infinity", "-Infinity"]


def test_model_status_lists_every_version_and_ignores_labels(server, model_stub):
    for path in ("", "/versions/1", "/labels/stable", "/labels/no-such-label"):
        response = requests.get(f"{server.rest_url}/v1/models/{MODEL_NAME}{path}", timeout=30)
        assert (response.status_code, response.json()) == (200, OK_STATUS), path
    missing = requests.get(f"{server.rest_url}/v1/models/{MODEL_NAME}/versions/7", timeout=30)
    assert (missing.status_code, missing.json()["error"]) == (
        404, f"Could not find version 7 of model {MODEL_NAME}")

    def status(**spec: Any) -> get_model_status_pb2.GetModelStatusResponse:
        return model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec=spec), timeout=30)

    labelled = status(name=MODEL_NAME, version_label="no-such-label")
    assert [(s.version, s.status.error_code) for s in labelled.model_version_status] == [(1, 0)]
    for spec, code, message in (({"name": ""}, grpc.StatusCode.NOT_FOUND,
                                 "Could not find any versions of model "),
                                ({"name": "nope"}, grpc.StatusCode.NOT_FOUND,
                                 "Could not find any versions of model nope")):
        with pytest.raises(grpc.RpcError) as error:
            status(**spec)
        assert (error.value.code(), error.value.details()) == (code, message)
    with pytest.raises(grpc.RpcError) as error:
        model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                           "Missing ModelSpec")


def test_metadata_is_the_same_json_over_rest_and_grpc(server, stub):
    rest = requests.get(f"{server.rest_url}/v1/models/{MODEL_NAME}/metadata", timeout=30)
    assert rest.status_code == 200, rest.text
    response = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": MODEL_NAME}, metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)

    def as_json(message: Any) -> dict:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    assert rest.json() == {"model_spec": as_json(response.model_spec),
                           "metadata": {"signature_def": as_json(signatures)}}
    assert rest.json()["model_spec"] == {"name": MODEL_NAME, "version": "1",
                                         "signature_name": ""}
    defs = rest.json()["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "from_examples", "__saved_model_init_op"}
    assert defs["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert set(defs["serving_default"]["outputs"]) == {"probabilities", "class_index",
                                                       "class_name"}
    with pytest.raises(grpc.RpcError) as error:
        stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": MODEL_NAME}, metadata_field=["signature_def", "x"]), timeout=30)
    assert error.value.details() == "Metadata field x is not supported"


def test_warmup_requests_of_the_version_replay_through_grpc(exported_model, stub, images,
                                                            reference):
    path = exported_model.version_dir / WARMUP_FILE
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert [len(log.predict_log.request.inputs["images"].string_val) for log in logs] == [
        1, 1, 1, 3]
    for log in logs:
        request = log.predict_log.request
        rows = [images.index(image) for image in request.inputs["images"].string_val]
        response = stub.Predict(request, timeout=60)
        assert_outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()},
                       reference, rows)


# --- errors ----------------------------------------------------------------------------------

REST_ERRORS = [  # path, body, HTTP status, the error (a part of it)
    ("/v1/models/nope:predict", "image", 404, "Servable not found for request: Latest(nope)"),
    (f"/v1/models/{MODEL_NAME}/versions/7:predict", "image", 404,
     f"Servable not found for request: Specific({MODEL_NAME}, 7)"),
    (f"/v1/models/{MODEL_NAME}/labels/canary:predict", "image", 400,
     "Unrecognized servable version label: canary"),
    (f"/v1/models/{MODEL_NAME}/versions/99999999999999999999:predict", "image", 400,
     "Failed to convert version: 99999999999999999999 to numeric."),
    (PREDICT, {"signature_name": "nope", "instances": []}, 400,
     'Serving signature name: "nope" not found in signature def'),
    (PREDICT, b"", 400, "JSON Parse error: The document is empty"),
    (PREDICT, b"instances = [1, 2]", 400, "JSON Parse error: Invalid value"),
    (PREDICT, {"signature_name": 5, "instances": []}, 400,
     "not formatted correctly. 'signature_name' key must be a string value."),
    (PREDICT, {"images": []}, 400, "Missing 'inputs' or 'instances' key"),
    (PREDICT, {"instances": [], "inputs": []}, 400,
     "expecting only one of 'inputs' or 'instances' keys to exist"),
    (PREDICT, {"instances": []}, 400, "No values in 'instances' array"),
    (PREDICT, {"instances": [7]}, 400, "Type: Number is not of expected type: string"),
    (PREDICT, {"instances": [{"b64": "not base64!"}]}, 400, "Unable to base64 decode"),
    (PREDICT, {"instances": [b64(b"plain text")]}, 400, "image"),
    (PREDICT, {"inputs": {"image": []}}, 400, "Missing named input: images in 'inputs' object."),
    (PREDICT, {"instances": [{"images": {"b64": ""}, "x": 1}]}, 400,
     "JSON object: does not have named input: x"),
    (f"/v1/models/{MODEL_NAME}/metadata", {}, 400,
     f"Malformed request: POST /v1/models/{MODEL_NAME}/metadata"),
    (f"/v1/models/{MODEL_NAME}:explain", {}, 400, "Malformed request"),
    (f"/v1/models/{MODEL_NAME}:PREDICT", {}, 400, "Malformed request"),  # the verb is exact
    (PREDICT, "oversized", 413, f"maximum of {MAX_REQUEST_BYTES} bytes"),
    # Malformed input is a 400, never a 500:
    (PREDICT, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "JSON Parse error: The document is nested too deeply"),
    (PREDICT, "image to from_examples", 400, "Could not parse example input"),
]


@pytest.mark.parametrize("path, body, status, error", REST_ERRORS,
                         ids=[f"{e[2]}-{e[3][:40]}" for e in REST_ERRORS])
def test_rest_errors_are_tf_serving_s_and_the_server_keeps_serving(
        server, stub, images, reference, path, body, status, error):
    if body == "image":
        body = {"instances": [b64(images[0])]}
    elif body == "oversized":
        body = {"instances": [b64(images[0] + b"\0" * MAX_REQUEST_BYTES)]}
    elif body == "image to from_examples":  # TF's error quotes the bytes, not UTF-8
        body = {"signature_name": EXAMPLES_SIGNATURE, "instances": [b64(images[0])]}
    response = post(server, path, body)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"} and error in response.json()["error"]
    assert_still_serving(server, stub, images, reference)


@pytest.mark.parametrize("method, path, status, error", [
    ("GET", "/v1/models", 400, "Missing model name in request."),
    ("GET", "/v1/what", 400, "Malformed request: GET /v1/what"),
    ("DELETE", f"/v1/models/{MODEL_NAME}", 400, "Malformed request: DELETE /v1/models/"),
    ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
    ("GET", f"/v1/models/{MODEL_NAME}/labels/canary/metadata", 400,
     "Unrecognized servable version label: canary"),
])
def test_rest_routing_errors(server, method, path, status, error):
    response = requests.request(method, f"{server.rest_url}{path}", timeout=30)
    assert response.status_code == status and error in response.json()["error"]


def test_grpc_errors_are_tf_serving_s_and_the_server_keeps_serving(server, stub, images,
                                                                    reference):
    good = images[0]
    no_spec = grpc_request([good])
    no_spec.ClearField("model_spec")
    duplicated, unknown_output, extra = (grpc_request([good]) for _ in range(3))
    duplicated.output_filter.extend(["probabilities", "probabilities"])
    unknown_output.output_filter.append("logits")
    extra.inputs["more"].CopyFrom(tf.make_tensor_proto([good]))
    code = grpc.StatusCode
    cases = {
        "unknown model": (grpc_request([good], name="nope"), code.NOT_FOUND,
                          "Servable not found for request: Latest(nope)"),
        "unknown version": (grpc_request([good], version=7), code.NOT_FOUND,
                            f"Servable not found for request: Specific({MODEL_NAME}, 7)"),
        "unknown label": (grpc_request([good], label="canary"), code.INVALID_ARGUMENT,
                          "Unrecognized servable version label: canary"),
        "no model name": (grpc_request([good], name=""), code.INVALID_ARGUMENT,
                          "ModelSpec has no name specified."),
        "no model spec": (no_spec, code.INVALID_ARGUMENT, "Missing ModelSpec"),
        "unknown signature": (grpc_request([good], signature="nope"), code.FAILED_PRECONDITION,
                              'Serving signature key "nope" not found.'),
        "wrong input name": (grpc_request([good], input_name="image"), code.INVALID_ARGUMENT,
                             "input tensor alias not found in signature: image. Inputs expected "
                             "to be in the set {images}."),
        "extra input": (extra, code.INVALID_ARGUMENT,
                        "input size does not match signature: 2!=1"),
        "duplicated output": (duplicated, code.INVALID_ARGUMENT,
                              "duplicate output tensor alias: probabilities"),
        "unknown output": (unknown_output, code.INVALID_ARGUMENT,
                           "output tensor alias not found in signature: logits"),
        "non-image bytes": (grpc_request([good, b"GIF89a but not really"]),
                            code.INVALID_ARGUMENT, ""),
        "image to from_examples": (grpc_request([good], signature=EXAMPLES_SIGNATURE,
                                                input_name=EXAMPLES_INPUT),
                                   code.INVALID_ARGUMENT, "Could not parse example input"),
        "oversized": (grpc_request([good + b"\0" * MAX_REQUEST_BYTES]),
                      code.RESOURCE_EXHAUSTED, ""),
    }
    for case, (request, status, message) in cases.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=60)
        assert error.value.code() == status, (case, error.value.details())
        assert error.value.details().startswith(message), (case, error.value.details())
        assert_still_serving(server, stub, images, reference)


def test_classify_and_regress_are_invalid_for_a_predict_only_model(server, stub):
    examples = {"examples": [{"image": b64(b"\xff\xd8\xff")}]}
    cases = [  # verb, model, body, HTTP status, the error
        ("classify", MODEL_NAME, examples, 400, "Expected one or two output Tensors, found 3"),
        ("regress", MODEL_NAME, examples, 400, "Expected one output Tensor."),
        ("classify", MODEL_NAME, {"signature_name": "from_examples", **examples}, 400,
         "Expected one or two output Tensors, found 4"),
        ("regress", MODEL_NAME, {"signature_name": "nope", **examples}, 400,
         "No signature was found with the name: nope"),
        ("classify", "nope", examples, 404, "Servable not found for request: Latest(nope)"),
        ("regress", MODEL_NAME, {"instances": []}, 400,
         "When method is classify, key 'examples' is expected and was not found"),
        ("classify", MODEL_NAME, {"examples": [[1]]}, 400,
         "Example must be JSON object but got JSON Array"),
    ]
    for verb, model, body, status, error in cases:
        response = post(server, f"/v1/models/{model}:{verb}", body)
        assert response.status_code == status and error in response.json()["error"], verb
    for method, request in ((stub.Classify, classification_pb2.ClassificationRequest()),
                            (stub.Regress, regression_pb2.RegressionRequest())):
        for name, status in ((MODEL_NAME, grpc.StatusCode.INVALID_ARGUMENT),
                             ("nope", grpc.StatusCode.NOT_FOUND)):
            request.model_spec.name = name
            with pytest.raises(grpc.RpcError) as error:
                method(request, timeout=30)
            assert error.value.code() == status, error.value.details()


# --- HTTP ------------------------------------------------------------------------------------

def test_paths_are_url_decoded_and_case_insensitive(server, images, reference):
    for path in ("/v1/models/image%5Fclassifier:predict",
                 f"/V1/Models/{MODEL_NAME}/Versions/1:predict"):
        assert_outputs(rest_columns(post(server, path, {"instances": [b64(images[0])]})),
                       reference, [0])
    label = post(server, f"/v1/models/{MODEL_NAME}/labels/can%61ry:predict",
                 {"instances": [b64(images[0])]})
    assert label.json()["error"] == "Unrecognized servable version label: canary"
    page = requests.get(f"{server.rest_url}/statuspage", timeout=30)
    assert page.status_code == 404 and "Not Found" in page.text
    preflight = requests.options(f"{server.rest_url}/v1/models/{MODEL_NAME}:predict",
                                 headers={"Origin": "http://localhost:3000"}, timeout=30)
    assert (preflight.status_code, preflight.content) == (200, b"")
    no_origin = requests.options(f"{server.rest_url}/v1/models/{MODEL_NAME}", timeout=30)
    assert no_origin.status_code == 400


def test_request_bodies_are_read_as_tf_serving_reads_them(server, images, reference):
    encoded = base64.b64encode(images[1]).decode()
    assert encoded.endswith("=")  # so that dropping the padding is a test
    bodies = {
        "extra columnar keys": {"inputs": {"images": [b64(images[1])], "unused": [1, 2]}},
        "no padding": {"inputs": {"images": [{"b64": encoded.rstrip("=")}]}},
        "line breaks": {"inputs": {"images": [
            {"b64": base64.encodebytes(images[1]).decode()}]}},
        "trailing text": json.dumps({"inputs": [b64(images[1])]}).encode() + b" trailing",
    }
    for case, body in bodies.items():
        response = post(server, PREDICT, body)
        assert response.status_code == 200, (case, response.text)
        assert_outputs(response.json()["outputs"], reference, [1])
    data = json.dumps({"instances": [b64(image) for image in images[:3]]}).encode()
    gzipped = post(server, PREDICT, gzip.compress(data), headers={"Content-Encoding": "gzip"})
    assert_outputs(rest_columns(gzipped), reference, [0, 1, 2])
    chunked = post(server, PREDICT, iter([data[:1000], data[1000:5000], data[5000:]]))
    assert chunked.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in chunked.request.headers
    assert_outputs(rest_columns(chunked), reference, [0, 1, 2])


def test_one_keep_alive_connection_outlives_errors_and_refused_bodies(server, images,
                                                                       reference):
    connection = http.client.HTTPConnection(server.host, server.rest_port, timeout=60)
    good = json.dumps({"instances": [b64(images[0])]}).encode()
    oversized = b" " * (MAX_REQUEST_BYTES + 1)
    sockets = set()
    # The oversized body is chunked: with no declared length the server reads and drops it,
    # so the connection survives (a declared length above the limit closes it: below).
    for body, status in ((good, 200), (b"{", 400), (iter([oversized]), 413), (good, 200)):
        connection.request("POST", PREDICT, body=body)
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status == status, payload
        sockets.add(connection.sock)
    assert len(sockets) == 1  # never reconnected
    assert_outputs({k: [v] for k, v in payload["predictions"][0].items()}, reference, [0])
    connection.close()


def test_concurrent_clients_all_succeed(server, images, reference):
    def worker(index: int) -> list[tuple[int, dict]]:
        rows = [(index * 7 + i) % len(images) for i in range(12)]
        if index % 2:
            with grpc.insecure_channel(server.grpc_address) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                return [(row, {k: tf.make_ndarray(v) for k, v in stub.Predict(
                    grpc_request([images[row]]), timeout=120).outputs.items()}) for row in rows]
        with requests.Session() as session:
            return [(row, rest_columns(session.post(
                f"{server.rest_url}{PREDICT}", json={"instances": [b64(images[row])]},
                timeout=120))) for row in rows]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for f in [pool.submit(worker, i) for i in range(8)] for a in f.result()]
    assert len(answers) == 96
    for row, outputs in answers:
        assert_outputs(outputs, reference, [row])


def raw_exchange(server: LocalServer, head: str, body: bytes = b"", shut: bool = False) -> bytes:
    """Sends a request head (its lines, without the blank line) and body over a socket, shuts
    the sending side when asked, and returns all the server sends until it closes."""
    with socket.create_connection((server.host, server.rest_port), timeout=30) as s:
        s.sendall(f"{head}\r\nHost: {server.host}\r\n\r\n".encode() + body)
        if shut:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(1 << 16):
            answer += chunk
    return answer


def test_http_details_are_tf_serving_s(server, images, reference):
    data = json.dumps({"instances": [b64(images[0])]}).encode()

    def post(encoding: str, body: bytes, *extra: str, shut: bool = False, missing: int = 0
             ) -> bytes:
        head = "\r\n".join([f"POST {PREDICT} HTTP/1.1",
                             f"Content-Length: {len(body) + missing}",
                             f"Content-Encoding: {encoding}", *extra])
        return raw_exchange(server, head, body, shut)

    def outputs(answer: bytes) -> dict[str, list]:
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        predictions = json.loads(answer.partition(b"\r\n\r\n")[2])["predictions"]
        return {k: [p[k] for p in predictions] for k in predictions[0]}

    # Any Content-Encoding naming gzip is inflated, nothing else; what does not inflate is empty.
    assert_outputs(outputs(post("x-gzip", gzip.compress(data), "Connection: close")),
                   reference, [0])
    assert b"JSON Parse error" in post("deflate", zlib.compress(data), "Connection: close")
    assert b"The document is empty" in post("gzip", b"not gzip", "Connection: close")
    # 100 Continue before the answer; the answer to a whole body after the client shut its side.
    expected = post("identity", data, "Expect: 100-continue", "Connection: close")
    assert expected.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), expected[:200]
    assert_outputs(outputs(post("identity", data, shut=True)), reference, [0])
    cut = post("identity", data, shut=True, missing=10)  # ten bytes announced never come
    assert cut.startswith(b"HTTP/1.1 400 ") and b"the body ended early" in cut, cut
    # Methods TF Serving does not let evhttp take: its 501 page.
    trace = raw_exchange(server, f"TRACE {PREDICT} HTTP/1.1\r\nConnection: close")
    assert trace.startswith(b"HTTP/1.1 501 ") and b"<H1>Not Implemented</H1>" in trace


@pytest.mark.parametrize("length", ["-5", "abc", "1e3", "99999999999999999999999"])
def test_a_bad_or_huge_content_length_is_answered_at_once(server, length):
    connection = http.client.HTTPConnection(server.host, server.rest_port, timeout=30)
    connection.putrequest("POST", PREDICT)
    connection.putheader("Content-Length", length)
    connection.endheaders(b"{}")
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    # A malformed length is 400; one above the server's limit is 413 before any body is read
    # (the server does not wait for 10^23 bytes).
    assert response.status == (413 if length.isdigit() else 400), (length, payload)
    assert "error" in payload
