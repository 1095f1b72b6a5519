"""TF Serving's gRPC API over the core: PredictionService (Predict, GetModelMetadata;
Classify and Regress check the signature as TF Serving does) and ModelService
(GetModelStatus). MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from serving.errors import InvalidArgument
from serving.server.batching import BatchLimits
from serving.server.core import ModelStore, as_serving_error
from serving.server.loader import arrays_from_protos, proto_shapes

MAX_ERROR_MESSAGE = 1024  # TF Serving's ToGRPCStatus truncates longer messages
# The typed value fields Tensor::AsProtoField fills (clients read e.g. float_val).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
}


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """An output array as a TensorProto with typed value fields, as TF Serving answers.

    Args:
      array: the output (numpy; an object array of bytes for strings).

    Returns:
      The TensorProto: dtype, shape and the values in the dtype's field (float_val, ...);
      tf.make_tensor_proto's (tensor_content) for other dtypes.
    """
    dtype = tf.as_dtype(array.dtype)
    field = _VALUE_FIELDS.get(dtype.as_datatype_enum)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum,
                                   tensor_shape=tf.TensorShape(array.shape).as_proto())
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


def _answers(method: Callable) -> Callable:
    """Ends a failed call with the error's status, as TF Serving's ToGRPCStatus does."""

    @functools.wraps(method)
    def handler(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        """Runs method; a failure aborts the call with its status (message cut at 1024)."""
        try:
            return method(self, request)
        except Exception as e:  # every failure becomes a status
            error = as_serving_error(e)
            message = str(error)
            if len(message) > MAX_ERROR_MESSAGE:
                message = message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
            context.abort(error.code, message)

    return handler


def _spec_of(request: Any) -> Any:
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    return request.model_spec


class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer,
               model_service_pb2_grpc.ModelServiceServicer):
    """Both services, each method one call into the core. With batch limits, a Predict whose
    TensorProtos declare a batch over them is refused before they are decoded (a shape [10**9]
    proto of one string would otherwise become a billion-element array)."""

    def __init__(self, store: ModelStore, limits: BatchLimits | None = None):
        self.store, self.limits = store, limits

    @_answers
    def Predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """PredictionService.Predict: runs the signature the request's model_spec names."""
        spec = _spec_of(request)
        if self.limits is not None:
            self.limits.check_declared(proto_shapes(request.inputs))
        inputs = arrays_from_protos(request.inputs)
        answered, outputs = self.store.predict(spec, inputs, request.output_filter)
        response = predict_pb2.PredictResponse(model_spec=answered)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value))
        return response

    @_answers
    def Classify(self, request: Any) -> Any:
        """PredictionService.Classify: TF Serving's checks, then UNIMPLEMENTED."""
        self.store.reject_classify_or_regress(_spec_of(request), "classify")

    @_answers
    def Regress(self, request: Any) -> Any:
        """PredictionService.Regress: TF Serving's checks, then UNIMPLEMENTED."""
        self.store.reject_classify_or_regress(_spec_of(request), "regress")

    @_answers
    def GetModelMetadata(self, request: Any) -> Any:
        """PredictionService.GetModelMetadata: the version's SignatureDefs."""
        return self.store.model_metadata(request)

    @_answers
    def GetModelStatus(self, request: Any) -> Any:
        """ModelService.GetModelStatus: the versions' states."""
        return self.store.model_status(request)


def create_grpc_server(store: ModelStore, address: str, max_request_bytes: int,
                       limits: BatchLimits | None = None, workers: int = 16
                       ) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) for the store on address ("host:port", port 0 picks one)
    and its port; gRPC refuses requests above max_request_bytes (RESOURCE_EXHAUSTED).

    Args:
      store: the versions the services answer from.
      address: "host:port" to bind.
      max_request_bytes: the largest request message accepted, in bytes.
      limits: the batch limits the store's versions obey, checked on the declared shapes.
      workers: threads serving calls.

    Returns:
      The server and the port it bound.

    Raises:
      RuntimeError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_request_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0)])
    servicer = Servicer(store, limits)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:  # grpc's message names the address only
        raise RuntimeError(f"cannot serve gRPC on {address}: is the port in use?") from e
    return server, port
