"""One loaded model version: its signatures, run the way TF Serving's Predict runs them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.constants import SIGNATURE_NAME
from serving.errors import FailedPrecondition, InvalidArgument, ServingError, error_for_code
from tensorflow_serving.apis import prediction_log_pb2

from contract.interface import WARMUP_FILE as WARMUP_PATH

LOG = logging.getLogger("serving.servable")
SAVED_MODEL_FILE = "saved_model.pb"
# Lines of TF error messages that describe the graph, not the problem.
_GRAPH_NOISE = re.compile(r"^(Graph execution error:|Detected at node|<stack traces|\s*\[\[)")


def read_warmup_requests(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a warmup file."""
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]


class LoadError(RuntimeError):
    """A version directory that is not a loadable SavedModel, or whose warmup failed."""


@dataclass
class Signature:
    """A signature's function and the TensorSpecs of its inputs and outputs."""

    function: Any  # a ConcreteFunction from tf.saved_model.load(...).signatures
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]


@dataclass
class Servable:
    """A SavedModel version loaded with tf.saved_model.load, ready to run its signatures."""

    version: int
    path: str
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    signatures: dict[str, Signature]
    warmup_requests_replayed: int = 0
    _loaded: Any = field(default=None, repr=False)  # keeps the functions' variables alive

    @classmethod
    def load(cls, path: str, version: int) -> Servable:
        """Loads the SavedModel at path and replays its warmup requests, as TF Serving does."""
        try:
            with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
                saved_model = saved_model_pb2.SavedModel.FromString(f.read())
            loaded = tf.saved_model.load(path)
        except (OSError, ValueError, DecodeError, tf.errors.OpError) as e:
            raise LoadError(f"cannot load version {version} from {path}: {e}") from e
        signatures = {
            name: Signature(fn, dict(fn.structured_input_signature[1]),
                            dict(fn.structured_outputs))
            for name, fn in loaded.signatures.items()}
        servable = cls(version, path, saved_model.meta_graphs[0].signature_def, signatures,
                       _loaded=loaded)
        servable.warmup_requests_replayed = servable._replay_warmup()
        return servable

    def signature(self, name: str) -> Signature:
        """The named signature ("" means serving_default); FAILED_PRECONDITION if unknown."""
        name = name or SIGNATURE_NAME
        try:
            return self.signatures[name]
        except KeyError:
            raise FailedPrecondition(f'Serving signature key "{name}" not found.') from None

    def run(self, signature_name: str, inputs: Mapping[str, Any],
            output_filter: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Runs a signature on named inputs (arrays or lists), returning numpy outputs.

        Input names, dtypes and shapes are checked against the signature (INVALID_ARGUMENT);
        TensorFlow errors keep their status code (e.g. undecodable image bytes are
        INVALID_ARGUMENT), with the graph details dropped from the message.
        """
        signature = self.signature(signature_name)
        _check_input_names(inputs, signature.inputs)
        tensors = {name: _to_tensor(name, inputs[name], spec)
                   for name, spec in signature.inputs.items()}
        wanted = list(output_filter) or list(signature.outputs)
        for name in wanted:
            if name not in signature.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {name} Outputs expected to "
                    f"be in the set {{{','.join(sorted(signature.outputs))}}}.")
        try:
            outputs = signature.function(**tensors)
        except tf.errors.OpError as e:
            raise error_for_code(e.error_code, _clean_message(e.message)) from None
        return {name: outputs[name].numpy() for name in wanted}

    def _replay_warmup(self) -> int:
        path = os.path.join(self.path, WARMUP_PATH)
        if not os.path.exists(path):
            return 0
        count = 0
        for log in read_warmup_requests(path):
            request = log.predict_log.request
            try:
                self.run(request.model_spec.signature_name,
                         {k: tf.make_ndarray(v) for k, v in request.inputs.items()},
                         request.output_filter)
            except ServingError as e:
                raise LoadError(f"warmup request {count + 1} in {path} failed: {e}") from e
            count += 1
        LOG.info("version %d: replayed %d warmup requests", self.version, count)
        return count


def _check_input_names(inputs: Mapping[str, Any], specs: Mapping[str, tf.TensorSpec]) -> None:
    if set(inputs) != set(specs):
        extra, missing = sorted(set(inputs) - set(specs)), sorted(set(specs) - set(inputs))
        raise InvalidArgument(
            f"input size does not match signature: {len(inputs)}!={len(specs)} "
            f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(specs))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")


def _to_tensor(name: str, value: Any, spec: tf.TensorSpec) -> tf.Tensor:
    try:
        tensor = tf.convert_to_tensor(value, dtype=spec.dtype)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"input {name} must be {spec.dtype.name}: {e}") from None
    if not spec.shape.is_compatible_with(tensor.shape):
        raise InvalidArgument(f"input {name} has shape {tensor.shape.as_list()}, the signature "
                              f"expects {spec.shape}")
    return tensor


def _clean_message(message: str) -> str:
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not _GRAPH_NOISE.match(line)]
    return " ".join(kept) or message
