"""How many images one request may hold, over real loopback sockets: TF Serving's batching
parameters file (--enable-batching), its large-batch splitting, the local server's
--max-batch-size guard without batching, and TensorProtos with a negative dimension.

Checked against TF Serving 2.19.1 (the image serving/docker-compose.yml runs) and the
TensorFlow it builds with:
  * tensorflow/core/kernels/batching_util/shared_batch_scheduler.h,
    Queue::ValidateBatchTaskQueueCapacity: a task larger than input_batch_size_limit (the
    file's max_batch_size) is InvalidArgumentError "Task size %d is larger than maximum input
    batch size %d", with or without enable_large_batch_splitting;
    Queue::ScheduleWithoutOrEagerSplitImpl: with splitting, a task is cut by
    split_input_task_func into pieces of at most max_execution_batch_size;
  * tensorflow_serving/servables/tensorflow/bundle_factory_util.h GetQueueOptions:
    max_execution_batch_size defaults to max_batch_size; bundle_factory_util.cc
    WrapSessionForBatching: "Last entry in allowed_batch_sizes must match max_batch_size; last
    entry was %d; expected %d";
  * tensorflow_serving/batching/batching_util.h ComputeTensorBatchSize: the batch is the
    inputs' common 0th dimension;
  * tensorflow/core/framework/tensor_shape.cc TensorShapeBase::IsValid(const
    TensorShapeProto&): a dimension below 0 makes Tensor::FromProto fail, and
    tensorflow/cc/saved_model/util.cc GetInputValues answers InvalidArgumentError "tensor
    parsing error: <alias>"; tensor.cc's FromProto repeats the last value to fill the shape;
  * tensorflow_serving/model_servers/http_rest_api_handler.cc and http_server.cc: REST
    answers the same message, INVALID_ARGUMENT as HTTP 400.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc

from contract.interface import IMAGES_INPUT, WARMUP_FILE
from serving.server import app
from serving.server.app import LocalServer
from serving.server.batching import (
    SHIPPED_BATCHING_FILE,
    BatchLimits,
    guard,
    read_batching_limits,
    shipped_max_batch_size,
)
from serving.server.loader import LoadError, SessionModel, load_like_tf_serving
from tests.conftest import MODEL_NAME
from tests.serving_helpers import assert_outputs, b64, grpc_request, rest_columns

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
SPLITTING = """# up to 40 images per request, run 16 at a time
max_batch_size { value: 40 }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 16 }
"""


def serve(exported_model, limits: BatchLimits) -> LocalServer:
    return LocalServer(str(exported_model.base_path), grpc_port=0, rest_port=0,
                       batch_limits=limits)


@pytest.fixture(scope="module")
def batching(exported_model) -> Iterator[LocalServer]:
    """--enable-batching with the shipped serving/batching.config (max_batch_size 16)."""
    with serve(exported_model, read_batching_limits(SHIPPED_BATCHING_FILE)) as server:
        yield server


def predict_grpc(server: LocalServer, request) -> dict[str, np.ndarray]:
    with grpc.insecure_channel(server.grpc_address, options=[
            ("grpc.max_send_message_length", -1)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=120)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_error(server: LocalServer, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        predict_grpc(server, request)
    return error.value.code(), error.value.details()


def rest(server: LocalServer, images: list[bytes]) -> requests.Response:
    return requests.post(server.rest_url + PREDICT, timeout=120,
                         json={"instances": [b64(image) for image in images]})


@pytest.fixture
def runs(monkeypatch) -> list[int]:
    """The batch sizes of the model's Session.runs while the test runs."""
    sizes: list[int] = []
    real = SessionModel._run

    def counted(self, signature, arrays, wanted):
        sizes.append(len(next(iter(arrays.values()))))
        return real(self, signature, arrays, wanted)

    monkeypatch.setattr(SessionModel, "_run", counted)
    return sizes


# --- the batching parameters file ------------------------------------------------------------

def test_the_shipped_file_parses_to_tf_serving_s_limits():
    assert read_batching_limits(SHIPPED_BATCHING_FILE) == BatchLimits(16, 16, batching=True)
    assert shipped_max_batch_size() == 16  # the guard's default: the same value, one home


@pytest.mark.parametrize("text, error", [
    ("max_batch_size: 16", 'is not a BatchingParameters text proto: 1:17 : '
                           "'max_batch_size: 16': Expected \"{\"."),
    ("max_batch_sizes { value: 16 }", 'has no field named "max_batch_sizes"'),
    ("max_batch_size { value: 64 }\nallowed_batch_sizes: 16",
     ": Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; "
     "expected 64"),
    (SPLITTING.replace("16", "41"), "input_batch_size_limit must be greater than or equal to "
                                    "max_execution_batch_size"),
    ("max_batch_size { value: 0 }", "input_batch_size_limit must be positive; was 0"),
])
def test_a_bad_batching_file_is_one_line_and_exit_status_2(tmp_path, capsys, text, error):
    config = tmp_path / "batching.config"
    config.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_batching_limits(config)
    assert error in str(raised.value) and "\n" not in str(raised.value)
    status = app.main(["--model-base-path", str(tmp_path), "--enable-batching",
                       "--batching-parameters-file", str(config)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f"error: {config}") and err.count("\n") == 1, err


def test_command_line_flag_errors(tmp_path, capsys):
    for flags, error in ((["--enable-batching", "--max-batch-size", "8"],
                          "error: --max-batch-size applies without --enable-batching"),
                         (["--max-batch-size", "0"], "error: --max-batch-size must be at least 1"),
                         (["--enable-batching", "--batching-parameters-file",
                           str(tmp_path / "none")],
                          "error: cannot read the batching parameters file")):
        assert app.main(["--model-base-path", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(error) and err.count("\n") == 1, err


# --- batching: over the sockets --------------------------------------------------------------

def test_batching_answers_up_to_max_batch_size_and_refuses_more(batching, images, reference,
                                                                runs):
    everything = list(range(16))
    assert_outputs(predict_grpc(batching, grpc_request(images[:16])), reference, everything)
    assert_outputs(rest_columns(rest(batching, images[:16])), reference, everything)
    assert runs == [16, 16]  # each whole: at most max_batch_size, no splitting
    # One more image: TF Serving's answer, before the model runs.
    message = "Task size 17 is larger than maximum input batch size 16"
    assert grpc_error(batching, grpc_request(images[:17])) == (
        grpc.StatusCode.INVALID_ARGUMENT, message)
    response = rest(batching, images[:17])
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert runs == [16, 16]
    assert_outputs(predict_grpc(batching, grpc_request(images[:1])), reference, [0])


def test_batching_refuses_a_declared_batch_before_decoding_it(batching):
    # One string value and shape [10**9]: Tensor::FromProto would fill a billion elements.
    request = grpc_request([b"x"])
    request.inputs[IMAGES_INPUT].tensor_shape.dim[0].size = 10**9
    assert grpc_error(batching, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Task size 1000000000 is larger than maximum input batch size 16")


def test_splitting_runs_a_request_in_pieces_of_max_execution_batch_size(
        exported_model, images, reference, runs, tmp_path):
    config = tmp_path / "splitting.config"
    config.write_text(SPLITTING)
    assert read_batching_limits(config) == BatchLimits(40, 16, batching=True)
    with serve(exported_model, read_batching_limits(config)) as server:
        runs.clear()  # the warmup replay's
        everything = list(range(40))
        assert_outputs(predict_grpc(server, grpc_request(images)), reference, everything)
        assert runs == [16, 16, 8]
        assert_outputs(rest_columns(rest(server, images)), reference, everything)
        assert runs == [16, 16, 8] * 2
        # Splitting does not lift max_batch_size: the scheduler checks it first.
        message = "Task size 41 is larger than maximum input batch size 40"
        assert grpc_error(server, grpc_request([*images, images[0]])) == (
            grpc.StatusCode.INVALID_ARGUMENT, message)
        response = rest(server, [*images, images[0]])
        assert (response.status_code, response.json()) == (400, {"error": message})
        assert runs == [16, 16, 8] * 2


def test_without_splitting_a_config_s_max_execution_batch_size_is_ignored(tmp_path):
    config = tmp_path / "batching.config"
    config.write_text("max_batch_size { value: 32 }\nmax_execution_batch_size { value: 8 }\n")
    assert read_batching_limits(config) == BatchLimits(32, 32, batching=True)


def test_batching_refuses_inputs_without_a_batch_dimension(batching):
    request = grpc_request([b"x"])
    request.inputs[IMAGES_INPUT].tensor_shape.ClearField("dim")  # a scalar
    assert grpc_error(batching, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Batching Run() input tensors must have at least one dimension")
    # The signature's checks come first (predict_util.cc PreProcessPrediction runs before the
    # batching session): no input is the signature's error, not the batching one.
    request.inputs.clear()
    code, message = grpc_error(batching, request)
    assert (code, message.split(" len(")[0]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature: 0!=1")


# --- without batching: the --max-batch-size guard --------------------------------------------

def test_the_guard_refuses_a_batch_over_max_batch_size(exported_model, images, reference,
                                                       runs):
    with serve(exported_model, guard(4)) as server:
        runs.clear()  # the warmup replay's
        assert_outputs(predict_grpc(server, grpc_request(images[:4])), reference, [0, 1, 2, 3])
        message = ("Batch size 5 is larger than the local server's --max-batch-size 4 (send "
                   "fewer images per request)")
        assert grpc_error(server, grpc_request(images[:5])) == (
            grpc.StatusCode.INVALID_ARGUMENT, message)
        response = rest(server, images[:5])
        assert (response.status_code, response.json()) == (400, {"error": message})
        huge = grpc_request([b"x"])
        huge.inputs[IMAGES_INPUT].tensor_shape.dim[0].size = 10**9
        assert grpc_error(server, huge)[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert runs == [4]


# --- negative dimensions ---------------------------------------------------------------------

def test_a_negative_dimension_is_a_tensor_parsing_error(server, images, reference):
    for dims in ([-1], [2, -3], [-1, -1]):
        request = grpc_request(images[:1])
        request.inputs[IMAGES_INPUT].tensor_shape.ClearField("dim")
        for size in dims:
            request.inputs[IMAGES_INPUT].tensor_shape.dim.add(size=size)
        assert grpc_error(server, request) == (
            grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {IMAGES_INPUT}"), dims
    # Shape [5] and one value: TensorFlow repeats the last value, five answers.
    request = grpc_request(images[:1])
    request.inputs[IMAGES_INPUT].tensor_shape.dim[0].size = 5
    assert_outputs(predict_grpc(server, request), reference, [0] * 5)


def test_a_warmup_request_with_a_negative_dimension_fails_the_load(exported_model, tmp_path):
    version = tmp_path / "1"
    shutil.copytree(exported_model.version_dir, version)
    warmup = Path(version / WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(warmup))]
    logs[1].predict_log.request.inputs[IMAGES_INPUT].tensor_shape.dim[0].size = -1
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    with pytest.raises(LoadError) as error:
        load_like_tf_serving(str(version))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value).endswith(
        f"warmup request 2 in {warmup} failed: tensor parsing error: {IMAGES_INPUT}")


def test_warmup_replays_through_the_batch_limits(exported_model):
    # The warmup file's largest request holds 3 images; TF Serving replays it through its
    # batching session, so a smaller max_batch_size fails the load as a request would.
    load_like_tf_serving(str(exported_model.version_dir), BatchLimits(3, 3, True))[0].close()
    with pytest.raises(LoadError) as error:
        load_like_tf_serving(str(exported_model.version_dir), BatchLimits(2, 2, True))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 3 is larger than maximum input batch size 2" in str(error.value)
