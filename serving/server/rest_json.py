"""TF Serving's REST JSON, in and out, as tensorflow_serving/util/json_tensor.cc reads and
writes it: "instances" (rows) or "inputs" (columns) in, {"predictions": ...} or
{"outputs": ...} out; binary strings as {"b64": ...}; floats as TF Serving prints them;
errors in its wording."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import InvalidArgument, ServingError, Unimplemented

B64 = "b64"
# rapidjson's wording for what Python's decoder reports most often.
_PARSE_ERRORS = {"Expecting value": "Invalid value.",
                 "Expecting property name enclosed in double quotes":
                     "Missing a name for object member.",
                 "Expecting ':' delimiter": "Missing a colon after a name of object member.",
                 "Unterminated string starting at": "Missing a closing quotation mark in string."}
_INTEGERS = {types_pb2.DT_INT8: (-2**7, 2**7), types_pb2.DT_INT16: (-2**15, 2**15),
             types_pb2.DT_INT32: (-2**31, 2**31), types_pb2.DT_INT64: (-2**63, 2**63),
             types_pb2.DT_UINT8: (0, 2**8), types_pb2.DT_UINT32: (0, 2**32),
             types_pb2.DT_UINT64: (0, 2**64)}
_FLOATS = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64}


def parse_request(body: bytes) -> dict[str, Any]:
    """Parses a :predict, :classify or :regress body as TF Serving does (NaN and Infinity are
    numbers, text after the object is ignored, strings keep their bytes).

    Args:
      body: the request body (UTF-8; invalid bytes are kept as surrogates).

    Returns:
      The JSON object; of repeated keys, the first value.

    Raises:
      InvalidArgument: empty or malformed JSON, not an object, a non-string signature_name.
    """
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc, _ = json.JSONDecoder(object_pairs_hook=_first_key_wins).raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"JSON Parse error: {_PARSE_ERRORS.get(e.msg, e.msg)} at offset: "
                              f"{e.pos}") from None
    except RecursionError:  # rapidjson has no depth limit; Python's decoder has one
        raise InvalidArgument("JSON Parse error: The document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_debug(doc)} Is not object")
    if not isinstance(doc.get("signature_name", ""), str):
        raise InvalidArgument(f"JSON Value: {_debug(doc)} not formatted correctly. "
                              "'signature_name' key must be a string value.")
    return doc


def check_examples(doc: dict[str, Any]) -> None:
    """Checks the "examples" of a :classify or :regress body as TF Serving does.

    Args:
      doc: the body, from parse_request.

    Raises:
      InvalidArgument: "context" or an example is not an object, or "examples" is missing,
        not a list, or empty.
    """
    examples = doc.get("examples")
    for example in [doc.get("context", {}), *(examples if isinstance(examples, list) else [])]:
        if not isinstance(example, dict):
            raise InvalidArgument(f"Example must be JSON object but got JSON {_type(example)}")
    if "examples" not in doc:  # sic: TF Serving says classify for regress too
        raise InvalidArgument(f"JSON Value: {_debug(doc)} When method is classify, key "
                              "'examples' is expected and was not found")
    if not isinstance(examples, list) or not examples:
        raise InvalidArgument(f"JSON Value: {_debug(doc)} " + (
            "'examples' value is an empty array" if examples == [] else
            "Expecting 'examples' value to be an list/array"))


def decode_inputs(doc: dict[str, Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
                  ) -> tuple[dict[str, np.ndarray], bool]:
    """The input arrays of a parsed :predict body, for the signature's inputs.

    Args:
      doc: the body, from parse_request.
      infos: the signature's inputs by alias.

    Returns:
      The arrays by alias (strings as bytes), and whether the body used "instances" (rows).

    Raises:
      ServingError: INVALID_ARGUMENT in TF Serving's words (UNIMPLEMENTED for a dtype JSON
        cannot fill).
    """
    if not infos:
        raise InvalidArgument("Failed to get input map for signature: "
                              f"{doc.get('signature_name') or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise InvalidArgument(f"JSON Value: {_debug(doc)} Not formatted correctly expecting "
                              "only one of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        return _rows(doc, infos), True
    if "inputs" not in doc:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    if not _is_named(doc["inputs"]):
        if len(infos) > 1:
            raise InvalidArgument("inputs is a plain value/list, but expecting an object as "
                                  "multiple input tensors required as per tensorinfo_map")
        return {alias: _tensor(doc["inputs"], info.dtype) for alias, info in infos.items()}, False
    for alias in infos:  # keys that are not inputs are ignored, as TF Serving ignores them
        if alias not in doc["inputs"]:
            raise InvalidArgument(f"Missing named input: {alias} in 'inputs' object.")
    return {alias: _tensor(doc["inputs"][alias], info.dtype)
            for alias, info in infos.items()}, False


def _rows(doc: dict[str, Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
          ) -> dict[str, np.ndarray]:
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument(f"JSON Value: {_debug(doc)} " + (
            "No values in 'instances' array" if instances == [] else
            "Expecting 'instances' to be an list/array"))
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise InvalidArgument("instances is a plain list, but expecting list of objects as "
                              "multiple input tensors required as per tensorinfo_map")
    named = _is_named(instances[0])
    items: dict[str, list[np.ndarray]] = {}
    for i, instance in enumerate(instances):
        if named != _is_named(instance):
            raise InvalidArgument(f"Expecting {'object' if named else 'value/list'} but got "
                                  f"{'list' if named else 'object'} at item {i} of input list")
        for alias, value in instance.items() if named else [(next(iter(infos)), instance)]:
            try:
                if alias not in infos:
                    raise InvalidArgument(f"JSON object: does not have named input: {alias}")
                item = _tensor(value, infos[alias].dtype)
                first = items[alias][0] if alias in items else item
                if item.shape != first.shape:
                    raise InvalidArgument(
                        f"Expecting tensor size: {first.size} but got: {item.size}"
                        if item.size != first.size else
                        f"Expecting shape {_shape(first)} but got: {_shape(item)}")
            except ServingError as e:
                key = f" key: {alias}" if named else ""
                raise InvalidArgument(f"Failed to process element: {i}{key} of 'instances' "
                                      f"list. Error: {e.code.name}: {e}") from None
            items.setdefault(alias, []).append(item)
        if named and set(instance) != set(infos):
            raise InvalidArgument(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{_debug(instance)} keys must be equal to: {','.join(sorted(infos))}")
    return {alias: np.stack(values) for alias, values in items.items()}


def _tensor(value: Any, dtype: int) -> np.ndarray:
    """A JSON value (a scalar or nested lists) as an array: the shape is the first elements',
    every list must match it (FillTensorProto)."""
    shape, first = [], value
    while isinstance(first, list):
        shape.append(len(first))
        first = first[0] if first else None
    flat: list[Any] = []

    def fill(item: Any, level: int) -> None:
        """Appends item's scalars to flat, checking its nesting against shape."""
        if not isinstance(item, list):
            if level != len(shape):
                raise InvalidArgument(f"JSON Value: {_debug(item)} found at incorrect level: "
                                      f"{level + 1} in the JSON DOM. Expected at level: "
                                      f"{len(shape)}")
            return flat.append(_scalar(item, dtype))
        if level >= len(shape) or len(item) != shape[level]:
            raise InvalidArgument(
                f"Encountered list at unexpected level: {level} expected < {len(shape)}"
                if level >= len(shape) else f"Encountered list at unexpected size: "
                f"{len(item)} at level: {level} expected size: {shape[level]}")
        for element in item:
            fill(element, level + 1)

    fill(value, 0)
    return np.array(flat, dtype=_FLOATS.get(dtype, object)).reshape(shape)


def _scalar(value: Any, dtype: int) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype == types_pb2.DT_STRING and isinstance(value, dict):
        return _b64decode(value)
    if dtype == types_pb2.DT_STRING and isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if (dtype in _FLOATS and number) or (dtype == types_pb2.DT_BOOL and
                                         isinstance(value, bool)):
        return value
    if dtype in _INTEGERS and number and isinstance(value, int):
        low, high = _INTEGERS[dtype]
        if low <= value < high:
            return value
    if dtype not in (*_INTEGERS, *_FLOATS, types_pb2.DT_BOOL, types_pb2.DT_STRING):
        raise Unimplemented(f"Conversion of JSON Value: {_debug(value)} to type: "
                            f"{_dtype_name(dtype)}")
    raise InvalidArgument(f"JSON Value: {_debug(value)} Type: {_type(value)} is not of "
                          f"expected type: {_dtype_name(dtype)}")


def _b64decode(value: dict[str, Any]) -> bytes:
    # As absl::Base64Unescape: whitespace is skipped and the "=" padding optional.
    if _is_named(value):
        raise InvalidArgument(f"JSON Value: {_debug(value)} not formatted correctly for base64 "
                              "data")
    text = re.sub(r"[ \t\n\v\f\r]", "", value[B64]).rstrip("=")
    try:
        if len(text) % 4 == 1:
            raise ValueError("truncated")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def encode_outputs(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """The :predict answer: {"predictions": rows} for "instances" requests, else
    {"outputs": columns}; one output unnamed; string outputs named *_bytes as base64.

    Args:
      outputs: the output arrays by alias (bytes objects for strings).
      row_format: True for "predictions" rows (the request used "instances").

    Returns:
      The JSON body, UTF-8 (strings keep their bytes).

    Raises:
      InvalidArgument: rows of a scalar output, or of outputs of different batch sizes.
    """
    names = sorted(outputs)

    def value(items: dict[str, str]) -> str:  # one output unnamed, several as an object
        """One JSON value from the outputs' JSON texts by name."""
        if len(items) == 1:
            return next(iter(items.values()))
        return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in items.items()) + "}"

    if not row_format:
        columns = value({n: _json(outputs[n], n.endswith("_bytes")) for n in names})
        return f'{{"outputs": {columns}}}'.encode("utf-8", "surrogateescape")
    for name in names:
        if not outputs[name].ndim:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if len(outputs[name]) != len(outputs[names[0]]):
            raise InvalidArgument(f"Tensor name: {name} has inconsistent batch size: "
                                  f"{len(outputs[name])} expecting: {len(outputs[names[0]])}")
    rows = [value({n: _json(outputs[n][row], n.endswith("_bytes")) for n in names})
            for row in range(len(outputs[names[0]]))]
    return f'{{"predictions": [{", ".join(rows)}]}}'.encode("utf-8", "surrogateescape")


def _json(array: Any, binary: bool) -> str:
    if np.ndim(array):
        return "[" + ", ".join(_json(item, binary) for item in array) + "]"
    value = array.item() if isinstance(array, np.ndarray | np.generic) else array
    dtype = getattr(array, "dtype", None)
    if isinstance(value, bytes):
        if binary:
            return f'{{"{B64}": "{base64.b64encode(value).decode()}"}}'
        return json.dumps(value.decode("utf-8", "surrogateescape"), ensure_ascii=False)
    if isinstance(value, bool | int):
        return json.dumps(value)
    if dtype in (np.float32, np.float64):
        return format_float(value, dtype == np.float32)
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {dtype}")


def format_float(value: float, float32: bool) -> str:
    """A float as TF Serving writes it: %g if that round-trips, else %.9g (float32) or %.17g
    (double); whole numbers end in ".0"; NaN, Infinity, -Infinity as rapidjson writes them.

    Args:
      value: the number.
      float32: whether it is a float32 output (round-trips at float32 precision).

    Returns:
      The JSON text, e.g. "0.25", "1.0", "3e-05".
    """
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if (np.float32(text) if float32 else float(text)) != value:
        text = f"{value:.{9 if float32 else 17}g}"
    return text if "." in text or "e" in text else text + ".0"


def error_body(message: str) -> bytes:
    """The answer to a failed request: {"error": message}.

    Args:
      message: the error message.

    Returns:
      The JSON body.
    """
    return json.dumps({"error": message}).encode()


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        result.setdefault(key, value)  # as rapidjson's FindMember
    return result


def _is_named(value: Any) -> bool:
    """A JSON object naming inputs, not a {"b64": "..."} string."""
    return isinstance(value, dict) and not (set(value) == {B64} and isinstance(value[B64], str))


def _debug(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:256]  # TF Serving cuts quoted JSON there


def _type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "Null", True: "True", False: "False"}[value]
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(map(str, array.shape)) + "]"
