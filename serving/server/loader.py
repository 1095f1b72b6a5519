"""Loading a SavedModel version the way TensorFlow Serving does, and running its signatures.

TF Serving's SavedModelBundle is a TF1 session: the MetaGraph tagged `serve` is imported, the
variables are restored through the SavedModel's saver, the init op runs (tables, assets), and
each Predict is one `Session::Run` feeding and fetching the SignatureDef's tensor names. Then
the warmup file is replayed, and a version whose load or warmup fails never becomes available.
`saved_model_cli run` takes the same path. So does this module: a model that TF Serving would
reject is rejected here too, unlike with TF2's object loader (`tf.saved_model.load`), which
accepts for example a Keras 3 model saved inside a tf.Module (tensorflow/serving#2226).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from contract.artifacts import SAVED_MODEL_FILE
from contract.interface import SERVING_SIGNATURE, WARMUP_FILE
from serving.errors import FailedPrecondition, InvalidArgument, ServingError, error_for_code
from serving.server.batching import BatchLimits
from serving.session_bundle import load_session, run_signature

LOG = logging.getLogger("serving.server.loader")
MAX_DIMENSIONS = 254  # TensorShape::MaxDimensions()
MAX_ELEMENTS = 2**63 - 1  # TensorShape's element count is an int64
# Lines of TF error messages that describe the graph, not the problem.
_GRAPH_NOISE = re.compile(r"^(Graph execution error:|Detected at node|<stack traces|\s*\[\[)")


class LoadError(RuntimeError):
    """A version TF Serving would not make available: its load or its warmup failed.

    `code` is the status TF Serving reports for such a version (GetModelStatus error_code):
    the failed request's status for a warmup failure, the TF error's for a failed load.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN):
        super().__init__(message)
        self.code = code


class SessionModel:
    """One SavedModel loaded into its own graph and session, as TF Serving holds a version;
    with batch limits, each run is checked and run as they say (see serving.server.batching),
    warmup replays included, as TF Serving replays them through its batching session."""

    def __init__(self, path: str, session: tf.compat.v1.Session,
                 meta_graph: meta_graph_pb2.MetaGraphDef, limits: BatchLimits | None = None):
        self.path = path
        self.limits = limits
        self._session = session
        # Every SignatureDef, as GetModelMetadata lists them (__saved_model_init_op included).
        self.all_signature_defs: dict[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def)
        self.signature_defs: dict[str, meta_graph_pb2.SignatureDef] = {
            name: sig for name, sig in meta_graph.signature_def.items()
            if not name.startswith("__")}  # __saved_model_init_op is not a signature
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def load(cls, path: str, limits: BatchLimits | None = None) -> SessionModel:
        """Imports the `serve` MetaGraph at path into a new session and restores its variables.

        Args:
          path: a SavedModel directory (one version).
          limits: the batch limits its runs obey; None: any batch runs whole.

        Returns:
          The loaded model.

        Raises:
          LoadError: no SavedModel, no `serve` MetaGraph, or a failed restore or init op.
        """
        if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            raise LoadError(f"{path} holds no {SAVED_MODEL_FILE}", grpc.StatusCode.NOT_FOUND)
        try:
            session, meta_graph = load_session(path)
        except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
            code = error_for_code(getattr(e, "error_code", grpc.StatusCode.UNKNOWN), "").code
            raise LoadError(f"cannot load {path}: {_clean(str(e))}", code) from e
        return cls(path, session, meta_graph, limits)

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        """The named SignatureDef ("" means serving_default).

        Args:
          name: the SignatureDef key.

        Returns:
          The SignatureDef.

        Raises:
          FailedPrecondition: no such signature (TF Serving's Predict answer).
        """
        name = name or SERVING_SIGNATURE
        try:
            return self.signature_defs[name]
        except KeyError:
            raise FailedPrecondition(
                f'Serving signature key "{name}" not found.') from None

    def run(self, signature_name: str, inputs: Mapping[str, Any],
            output_filter: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Runs a signature as TF Serving's Predict does: one Session.run on its tensors.

        Args:
          signature_name: the SignatureDef key ("" means serving_default).
          inputs: a value (array or nested list; bytes for strings) per input alias.
          output_filter: the output aliases to fetch, each once; empty means all.

        Returns:
          The fetched outputs by alias, as numpy arrays.

        Raises:
          ServingError: INVALID_ARGUMENT for wrong input aliases, dtypes or shapes, unknown or
            duplicated output aliases, a batch over the limits, and bad values (e.g.
            undecodable images); the status of the TF error otherwise.
        """
        signature = self.signature(signature_name)
        _check_input_aliases(inputs, signature.inputs)
        if self.limits is not None:  # TF Serving's batching sees the tensors before the graph
            self.limits.check({alias: np.shape(value if isinstance(value, np.ndarray) else
                                               np.asarray(value, dtype=object))
                               for alias, value in inputs.items()})
        arrays = {alias: _to_array(alias, value, signature.inputs[alias])
                  for alias, value in inputs.items()}
        wanted = list(output_filter) or sorted(signature.outputs)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in signature.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(signature.outputs))}}}.")
            if alias in seen:
                raise InvalidArgument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        if self._closed:
            raise error_for_code(14, "the version is being unloaded")  # UNAVAILABLE
        if self.limits is None:
            return self._run(signature, arrays, wanted)
        return self.limits.run(lambda part: self._run(signature, part, wanted), arrays)

    def _run(self, signature: meta_graph_pb2.SignatureDef, arrays: dict[str, np.ndarray],
             wanted: list[str]) -> dict[str, np.ndarray]:
        try:
            return run_signature(self._session, signature, arrays, wanted)
        except tf.errors.OpError as e:
            raise error_for_code(e.error_code, _clean(e.message)) from None
        except UnicodeDecodeError as e:
            # An op's error quoting the input's bytes (e.g. an image fed to from_examples:
            # "Could not parse example input, value: '\xff\xd8...") cannot become a Python
            # OpError; TF Serving answers it as the op did, INVALID_ARGUMENT.
            text = e.object.decode("utf-8", "replace") if isinstance(e.object, bytes) else ""
            raise InvalidArgument(_clean(text)[:300] or "invalid input") from None

    def run_request(self, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
        """Runs a Predict request as it stands (a warmup record, a check's request).

        Args:
          request: its signature name, input TensorProtos and output filter are used.

        Returns:
          The fetched outputs by alias.

        Raises:
          ServingError: as `run`.
        """
        return self.run(request.model_spec.signature_name, arrays_from_protos(request.inputs),
                        request.output_filter)

    def replay_warmup(self) -> int:
        """Replays assets.extra/tf_serving_warmup_requests, as TF Serving does at load.

        Returns:
          How many requests were replayed (0 without a warmup file).

        Raises:
          LoadError: the file cannot be read, holds a non-Predict record, or a request fails.
        """
        path = os.path.join(self.path, WARMUP_FILE)
        requests = warmup_requests(path)
        for count, request in enumerate(requests, 1):
            try:
                self.run_request(request)
            except ServingError as e:
                raise LoadError(f"warmup request {count} in {path} failed: {e}", e.code) from e
        return len(requests)

    def close(self) -> None:
        """Frees the session; runs started later fail with UNAVAILABLE. Call it once no run
        is in flight (the local server waits for the requests holding the version)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()


def warmup_requests(path: str) -> list[predict_pb2.PredictRequest]:
    """The Predict requests of a warmup file (assets.extra/tf_serving_warmup_requests).

    Args:
      path: the file, a TFRecord of PredictionLog records.

    Returns:
      The requests in file order; [] when there is no such file.

    Raises:
      LoadError: the file cannot be read, or holds a record that is not a Predict request.
    """
    if not os.path.exists(path):
        return []
    try:
        records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(path)]
    except Exception as e:  # corrupt record, unparsable proto
        raise LoadError(f"cannot read the warmup file {path}: {_clean(str(e))}",
                        grpc.StatusCode.DATA_LOSS) from e
    for count, log in enumerate(records, 1):
        if log.WhichOneof("log_type") != "predict_log":
            raise LoadError(f"warmup request {count} in {path} is not a Predict request "
                            "(the local server replays Predict only)",
                            grpc.StatusCode.UNIMPLEMENTED)
    return [log.predict_log.request for log in records]


def proto_shapes(protos: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, tuple[int, ...]]:
    """The shapes a request's input TensorProtos declare, refused where TensorFlow's
    Tensor::FromProto refuses them (TensorShape::IsValid, tensorflow/core/framework/
    tensor_shape.cc: a negative dimension, more than 254 dimensions, or more elements than an
    int64 counts); TF Serving then answers "tensor parsing error: <alias>" (GetInputValues,
    tensorflow/cc/saved_model/util.cc).

    Args:
      protos: the TensorProtos by input alias.

    Returns:
      The declared shapes by alias (nothing is decoded).

    Raises:
      InvalidArgument: a shape TensorFlow refuses.
    """
    shapes = {}
    for alias, proto in protos.items():
        shape = tuple(dim.size for dim in proto.tensor_shape.dim)
        if len(shape) > MAX_DIMENSIONS or any(size < 0 for size in shape) or (
                int(np.prod(shape, dtype=object)) > MAX_ELEMENTS):
            raise InvalidArgument(f"tensor parsing error: {alias}")
        shapes[alias] = shape
    return shapes


def arrays_from_protos(protos: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
    """A request's input TensorProtos as numpy arrays (strings as object arrays of bytes).

    Args:
      protos: the TensorProtos by input alias.

    Returns:
      The arrays by alias.

    Raises:
      InvalidArgument: a malformed TensorProto (where TF Serving's Tensor::FromProto fails),
        e.g. a negative dimension (see proto_shapes).
    """
    proto_shapes(protos)
    arrays = {}
    for alias, proto in protos.items():
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except Exception:  # malformed: Tensor::FromProto fails in TF Serving
            raise InvalidArgument(f"tensor parsing error: {alias}") from None
    return arrays


def load_like_tf_serving(path: str, limits: BatchLimits | None = None
                         ) -> tuple[SessionModel, int]:
    """Loads a version and replays its warmup file, as TF Serving does before serving it.

    Args:
      path: a SavedModel directory (one version).
      limits: the batch limits its runs (warmup included) obey; None: any batch runs whole.

    Returns:
      The loaded model and the number of warmup requests replayed.

    Raises:
      LoadError: the version would not become available in TF Serving.
    """
    model = SessionModel.load(path, limits)
    try:
        return model, model.replay_warmup()
    except LoadError:
        model.close()
        raise


def _check_input_aliases(inputs: Mapping[str, Any],
                         specs: Mapping[str, meta_graph_pb2.TensorInfo]) -> None:
    extra, missing = sorted(set(inputs) - set(specs)), sorted(set(specs) - set(inputs))
    if extra and len(inputs) == len(specs):  # as many inputs as expected, one misnamed
        raise InvalidArgument(
            f"input tensor alias not found in signature: {extra[0]}. Inputs expected to be in "
            f"the set {{{','.join(sorted(specs))}}}.")
    if extra or missing:
        raise InvalidArgument(
            f"input size does not match signature: {len(inputs)}!={len(specs)} "
            f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(specs))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")


def _to_array(alias: str, value: Any, info: meta_graph_pb2.TensorInfo) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(info.dtype)
    try:
        array = np.asarray(value, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"input {alias} must be {dtype.name}: {e}") from None
    if dtype == tf.string and not all(isinstance(v, bytes) for v in array.ravel()):
        raise InvalidArgument(f"input {alias} must be {dtype.name}: expected bytes")
    shape = tf.TensorShape(info.tensor_shape)
    if not shape.is_compatible_with(array.shape):
        raise InvalidArgument(f"input {alias} has shape {list(array.shape)}, the signature "
                              f"expects {shape}")
    return array


def _clean(message: str) -> str:
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not _GRAPH_NOISE.match(line)]
    return " ".join(kept) or message
