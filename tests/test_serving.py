"""The files for tensorflow/serving (serving/models.config, batching.config,
docker-compose.yml): valid for TF Serving, and models.config as the local server reads it.
The local server itself is tested in test_server_*.py, the clients in test_client.py."""

from __future__ import annotations

import yaml
from google.protobuf import descriptor_pb2, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.config import TF_SERVING_IMAGE
from serving.server.core import aspired_versions, read_model_config
from tests.conftest import MODEL_NAME, REPO

SERVING = REPO / "serving"


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
    # The project's one TF Serving image (pipeline/config.py), also the serving check's.
    assert TF_SERVING_IMAGE.startswith("tensorflow/serving:")
    assert service["image"] == TF_SERVING_IMAGE
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


def test_the_local_server_reads_models_config_as_tf_serving_does():
    config = read_model_config(str(SERVING / "models.config"), MODEL_NAME)
    assert aspired_versions(config, [1700000000, 1700003600, 1700007200]) == {
        1700003600, 1700007200}  # the newest two
