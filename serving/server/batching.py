"""How many images one request may hold, and how it is run: TF Serving's batching parameters
file (`--enable_batching --batching_parameters_file`) read as TF Serving reads it, or the local
server's own guard when batching is off.

With batching, TF Serving's SharedBatchScheduler refuses a request whose batch (the 0th
dimension of its inputs) is larger than max_batch_size, INVALID_ARGUMENT "Task size N is larger
than maximum input batch size M", whether or not large-batch splitting is on
(tensorflow/core/kernels/batching_util/shared_batch_scheduler.h,
Queue::ValidateBatchTaskQueueCapacity). With enable_large_batch_splitting a request is split
into batches of at most max_execution_batch_size (default: max_batch_size; GetQueueOptions in
tensorflow_serving/servables/tensorflow/bundle_factory_util.h), so splitting lets a request be
larger than the batches the model runs, never larger than max_batch_size. The local server
runs each request on its own (it merges no concurrent requests and pads to no
allowed_batch_sizes), whole or in those pieces, one after the other.

Without batching, TF Serving runs a batch of any size; the local server refuses one larger
than its --max-batch-size (by default the shipped file's max_batch_size), so that one request
cannot make it hold gigabytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.errors import FailedPrecondition, InvalidArgument

# The file serving/docker-compose.yml gives TF Serving (--batching_parameters_file).
SHIPPED_BATCHING_FILE = Path(__file__).resolve().parent.parent / "batching.config"
# SharedBatchScheduler::QueueOptions' input_batch_size_limit when max_batch_size is unset.
TF_DEFAULT_MAX_BATCH_SIZE = 1000

# tensorflow_serving/servables/tensorflow/session_bundle_config.proto (2.19.1),
# message BatchingParameters: (field, number, type); tensorflow-serving-api does not ship it.
_WRAPPED = {"Int64Value", "StringValue", "BoolValue"}
_FIELDS = (("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
           ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
           ("thread_pool_name", 5, "StringValue"), ("allowed_batch_sizes", 6, "repeated int64"),
           ("pad_variable_length_inputs", 7, "bool"),
           ("enable_large_batch_splitting", 8, "BoolValue"),
           ("max_execution_batch_size", 9, "Int64Value"))


@functools.cache
def batching_parameters_class() -> type:
    """TF Serving's BatchingParameters message, built from its fields in a private pool.

    Returns:
      The message class (text_format parses the batching parameters file into it).
    """
    Field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tfx_image_transfer/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind in _FIELDS:
        field = message.field.add(name=name, number=number, label=Field.LABEL_OPTIONAL)
        if kind in _WRAPPED:
            field.type, field.type_name = Field.TYPE_MESSAGE, f".google.protobuf.{kind}"
        elif kind == "bool":
            field.type = Field.TYPE_BOOL
        else:
            field.type, field.label = Field.TYPE_INT64, Field.LABEL_REPEATED
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def read_batching_parameters(path: str | Path) -> Any:
    """Parses a batching parameters file (BatchingParameters in text format).

    Args:
      path: the file.

    Returns:
      The BatchingParameters message.

    Raises:
      ValueError: one line naming the file: unreadable, or not BatchingParameters text.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the batching parameters file {path}: {e}") from None
    try:
        return text_format.Parse(text, batching_parameters_class()())
    except text_format.ParseError as e:
        raise ValueError(f"{path} is not a BatchingParameters text proto: {e}") from None


def shipped_max_batch_size() -> int:
    """The max_batch_size of the shipped serving/batching.config: the local server's default
    --max-batch-size, so the value has one home.

    Returns:
      The number of images.

    Raises:
      ValueError: the shipped file is missing, does not parse or sets no max_batch_size.
    """
    parameters = read_batching_parameters(SHIPPED_BATCHING_FILE)
    if not parameters.HasField("max_batch_size"):
        raise ValueError(f"{SHIPPED_BATCHING_FILE} sets no max_batch_size")
    return parameters.max_batch_size.value


@dataclass(frozen=True)
class BatchLimits:
    """The largest batch one request may hold, and the pieces it runs in.

    Attributes:
      max_batch_size: larger batches are refused.
      execution_batch_size: the largest piece run at once (max_batch_size: run whole).
      batching: True for TF Serving's batching (its wording and checks), False for the local
        server's --max-batch-size guard.
    """

    max_batch_size: int
    execution_batch_size: int
    batching: bool

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """The batch size of a request's inputs, refused above max_batch_size.

        Args:
          shapes: each input's shape, by name.

        Returns:
          The batch size: the inputs' common 0th dimension (the guard: the largest, 1 for
          scalars).

        Raises:
          InvalidArgument: with batching, no input, an input without dimensions or 0th
            dimensions that differ (tensorflow_serving/batching/batching_util.h
            ComputeTensorBatchSize), or a batch over max_batch_size (worded as the
            SharedBatchScheduler); without, a batch over --max-batch-size.
        """
        if not self.batching:
            size = max((shape[0] if shape else 1 for shape in shapes.values()), default=0)
        elif not shapes:
            raise InvalidArgument("Batching Run() must have at least one input tensor")
        elif any(not shape for shape in shapes.values()):
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        elif len({shape[0] for shape in shapes.values()}) > 1:
            raise InvalidArgument(
                "Batching Run() input tensors must have equal 0th-dimension size")
        else:
            size = next(iter(shapes.values()))[0]
        self.check_declared({"": (size,)})
        return size

    def check_declared(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Refuses a request whose largest declared batch is over max_batch_size, before its
        tensors are built (the other checks wait for the run, as in TF Serving).

        Args:
          shapes: each input's declared shape, by name.

        Raises:
          InvalidArgument: as check() for a batch over the limit.
        """
        size = max((shape[0] for shape in shapes.values() if shape), default=0)
        if size <= self.max_batch_size:
            return
        if self.batching:
            raise InvalidArgument(f"Task size {size} is larger than maximum input batch size "
                                  f"{self.max_batch_size}")
        raise InvalidArgument(
            f"Batch size {size} is larger than the local server's --max-batch-size "
            f"{self.max_batch_size} (send fewer images per request)")

    def run(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
            inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a request's inputs whole, or in pieces of at most execution_batch_size rows
        whose outputs are joined again.

        Args:
          run: runs one piece (arrays by the same names) and returns its outputs by alias.
          inputs: the request's arrays by name (input alias or tensor name).

        Returns:
          The outputs by alias, as one run would give them.

        Raises:
          InvalidArgument: as check().
          FailedPrecondition: with batching, an output without a 0th dimension of the piece's
            batch size, as TF Serving's BatchingSession::SplitOutputTensors refuses it.
        """
        size = self.check({alias: np.shape(value) for alias, value in inputs.items()})
        if size <= self.execution_batch_size:
            return self._checked(run(dict(inputs)), size)
        pieces = [self._checked(run({alias: value[start:start + self.execution_batch_size]
                                     for alias, value in inputs.items()}),
                                min(self.execution_batch_size, size - start))
                  for start in range(0, size, self.execution_batch_size)]
        return {alias: np.concatenate([piece[alias] for piece in pieces]) for alias in pieces[0]}

    def _checked(self, outputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        if self.batching:
            for value in outputs.values():
                if not np.ndim(value):
                    raise FailedPrecondition("Batched output tensor has 0 dimensions")
                if np.shape(value)[0] != size:
                    raise FailedPrecondition(
                        "Batched output tensor's 0th dimension does not equal the sum of the "
                        "0th dimension sizes of the input tensors")
        return outputs


def guard(max_batch_size: int) -> BatchLimits:
    """The local server's limit without batching: refuse batches over max_batch_size.

    Args:
      max_batch_size: the --max-batch-size (at least 1).

    Returns:
      The limits; a batch within them runs whole.
    """
    return BatchLimits(max_batch_size, max_batch_size, batching=False)


def batching_limits(parameters: Any, path: str | Path = "") -> BatchLimits:
    """The limits a BatchingParameters sets, checked as TF Serving checks them when it loads a
    model with batching (bundle_factory_util.cc WrapSessionForBatching, GetQueueOptions;
    SharedBatchScheduler::AddQueue).

    Args:
      parameters: the parsed BatchingParameters.
      path: the file, for the error.

    Returns:
      The limits.

    Raises:
      ValueError: one line: a value TF Serving refuses (its wording after the file name).
    """
    def value(field: str, default: int) -> int:
        return getattr(parameters, field).value if parameters.HasField(field) else default

    max_size = value("max_batch_size", TF_DEFAULT_MAX_BATCH_SIZE)
    splitting = parameters.enable_large_batch_splitting.value
    execution = value("max_execution_batch_size", max_size) if splitting else max_size
    allowed = list(parameters.allowed_batch_sizes)
    problem = None
    if allowed and allowed[-1] != max_size:
        problem = ("Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                   f"{allowed[-1]}; expected {max_size}")
    elif max_size <= 0:
        problem = f"input_batch_size_limit must be positive; was {max_size}"
    elif value("batch_timeout_micros", 0) < 0:
        problem = ("batch_timeout_micros must be non-negative; was "
                   f"{parameters.batch_timeout_micros.value}")
    elif value("max_enqueued_batches", 1) <= 0:
        problem = ("max_enqueued_batches must be positive; was "
                   f"{parameters.max_enqueued_batches.value}")
    elif value("num_batch_threads", 1) <= 0:
        problem = ("num_batch_threads must be positive; was "
                   f"{parameters.num_batch_threads.value}")
    elif splitting and not 0 < execution <= max_size:
        problem = ("When enable_large_batch_splitting is true, input_batch_size_limit must be "
                   f"greater than or equal to max_execution_batch_size (max_batch_size "
                   f"{max_size}, max_execution_batch_size {execution})")
    if problem:
        raise ValueError(f"{path}: {problem}")
    return BatchLimits(max_size, execution, batching=True)


def read_batching_limits(path: str | Path) -> BatchLimits:
    """The limits of a batching parameters file, as TF Serving with --enable_batching applies
    them.

    Args:
      path: the BatchingParameters text file.

    Returns:
      The limits.

    Raises:
      ValueError: one line: the file is unreadable, does not parse, or TF Serving refuses it.
    """
    return batching_limits(read_batching_parameters(path), path)
