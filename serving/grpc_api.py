"""TF Serving's gRPC API over a ModelStore: PredictionService.Predict and GetModelMetadata,
ModelService.GetModelStatus (Classify, Regress, MultiInference and HandleReloadConfigRequest
answer UNIMPLEMENTED, from the generated servicer base classes)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.constants import SIGNATURE_NAME
from serving.errors import InvalidArgument, ServingError
from serving.model_store import ModelStore
from serving.servable import Servable
from serving.tensors import from_tensor_proto, to_tensor_proto

SIGNATURE_DEF_FIELD = "signature_def"
_STATES = get_model_status_pb2.ModelVersionStatus.State


def resolve(store: ModelStore, spec: model_pb2.ModelSpec) -> Servable:
    """The servable a ModelSpec names (latest, version or version_label)."""
    choice = spec.WhichOneof("version_choice")
    return store.resolve(spec.name, version=spec.version.value if choice == "version" else None,
                         label=spec.version_label if choice == "version_label" else None)


def _response_spec(spec: model_pb2.ModelSpec, servable: Servable,
                   signature_name: str | None) -> model_pb2.ModelSpec:
    out = model_pb2.ModelSpec(name=spec.name)
    out.version.value = servable.version
    if signature_name is not None:
        out.signature_name = signature_name or SIGNATURE_NAME
    return out


def _abort_on_serving_error(method: Callable) -> Callable:
    """Ends the call with the ServingError's gRPC status, as TF Serving would answer."""

    @functools.wraps(method)
    def handler(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except ServingError as e:
            context.abort(e.code, str(e))

    return handler


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata."""

    def __init__(self, store: ModelStore):
        self.store = store

    @_abort_on_serving_error
    def Predict(self, request: predict_pb2.PredictRequest,
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        servable = resolve(self.store, request.model_spec)
        inputs = {name: from_tensor_proto(t) for name, t in request.inputs.items()}
        outputs = servable.run(request.model_spec.signature_name, inputs, request.output_filter)
        response = predict_pb2.PredictResponse(
            model_spec=_response_spec(request.model_spec, servable,
                                      request.model_spec.signature_name))
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(to_tensor_proto(value))
        return response

    @_abort_on_serving_error
    def GetModelMetadata(
            self, request: get_model_metadata_pb2.GetModelMetadataRequest,
            context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return model_metadata(self.store, request)


def model_metadata(store: ModelStore, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: the signature_def map of the version the request names."""
    if not request.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
        if name != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {name} is not supported")
    servable = resolve(store, request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=_response_spec(request.model_spec, servable, None))
    response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus."""

    def __init__(self, store: ModelStore):
        self.store = store

    @_abort_on_serving_error
    def GetModelStatus(
            self, request: get_model_status_pb2.GetModelStatusRequest,
            context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return model_status(self.store, request)


def model_status(store: ModelStore, request: get_model_status_pb2.GetModelStatusRequest
                 ) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus: the state of every version (or of the one the request names)."""
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    states = store.states(spec.name, version=spec.version.value if choice == "version" else None,
                          label=spec.version_label if choice == "version_label" else None)
    response = get_model_status_pb2.GetModelStatusResponse()
    for state in states:
        status = response.model_version_status.add(version=state.version,
                                                   state=_STATES.Value(state.state))
        if state.error:
            status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            status.status.error_message = state.error
    return response


def create_grpc_server(store: ModelStore, address: str, max_request_bytes: int,
                       workers: int = 16) -> tuple[grpc.Server, int]:
    """A started-to-be gRPC server on address ("host:port", port 0 picks one) and its port.

    Requests above max_request_bytes are refused by gRPC with RESOURCE_EXHAUSTED.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_request_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(store), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:  # grpc's message names the address only
        raise RuntimeError(f"cannot serve gRPC on {address}: is the port in use?") from e
    return server, port
