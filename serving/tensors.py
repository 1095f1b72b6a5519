"""TensorProto <-> numpy for the gRPC API, laid out as TF Serving answers (typed value fields,
as Tensor::AsProtoField writes them, which clients reading e.g. `float_val` rely on)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
}


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A numpy array (as TF returns it) as a TensorProto with typed value fields."""
    dtype = tf.as_dtype(array.dtype)
    field = _VALUE_FIELDS.get(dtype.as_datatype_enum)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum,
                                   tensor_shape=tf.TensorShape(array.shape).as_proto())
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


def from_tensor_proto(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A request TensorProto as a numpy array (strings as an object array of bytes)."""
    return tf.make_ndarray(proto)
