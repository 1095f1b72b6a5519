"""TF Serving's REST JSON for predict: "instances" (row format) or "inputs" (columnar) in,
{"predictions": ...} (rows) or {"outputs": ...} (columns) out; binary strings as {"b64": ...}.
See https://www.tensorflow.org/tfx/serving/api_rest#predict_api."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from serving.errors import InvalidArgument

B64 = "b64"


@dataclass
class PredictBody:
    """A parsed predict request: signature name, raw JSON inputs, and which format."""

    signature_name: str
    row_format: bool
    data: Any  # the "instances" list or the "inputs" value


def parse_predict_body(body: bytes) -> PredictBody:
    """Parses the JSON body of a :predict request (INVALID_ARGUMENT if malformed)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
        raise InvalidArgument("JSON Value: request is not a JSON object")
    if "instances" in request and "inputs" in request:
        raise InvalidArgument("Only one of 'instances' or 'inputs' may be given")
    if "instances" not in request and "inputs" not in request:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise InvalidArgument("'signature_name' key must be a string")
    if "instances" in request:
        return PredictBody(signature_name, True, request["instances"])
    return PredictBody(signature_name, False, request["inputs"])


def decode_inputs(body: PredictBody, specs: Mapping[str, tf.TensorSpec]) -> dict[str, Any]:
    """The named input values of a request, binary strings decoded, for the signature specs."""
    names = list(specs)
    if body.row_format:
        instances = body.data
        if not isinstance(instances, list) or not instances:
            raise InvalidArgument("'instances' must be a non-empty JSON list")
        if all(_is_named(i) for i in instances):
            columns = {n: [i.get(n) for i in instances] for n in set().union(*instances)}
            missing = [n for n, c in columns.items() if any(v is None for v in c)]
            if missing:
                raise InvalidArgument(f"every instance must name the same inputs: {missing}")
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise InvalidArgument(f"the signature has inputs {sorted(names)}: each instance "
                                  "must be a JSON object naming them")
    elif _is_named(body.data):
        columns = dict(body.data)
    elif len(names) == 1:
        columns = {names[0]: body.data}
    else:
        raise InvalidArgument(f"'inputs' must be a JSON object naming {sorted(names)}")
    return {name: _decode(value, specs.get(name)) for name, value in columns.items()}


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and set(value) != {B64}


def _decode(value: Any, spec: tf.TensorSpec | None) -> Any:
    if spec is None:
        return value  # an unknown input name: the servable reports it with the others
    if spec.dtype != tf.string:
        return value
    if isinstance(value, list):
        return [_decode(v, spec) for v in value]
    if isinstance(value, dict):
        if set(value) != {B64}:
            raise InvalidArgument(f'binary strings are {{"b64": ...}} objects, not {value!r:.100}')
        try:
            return base64.b64decode(value[B64], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise InvalidArgument(f"Unable to base64 decode: {e}") from None
    if isinstance(value, str):
        return value.encode()
    raise InvalidArgument(f"a string input needs strings or {{\"b64\": ...}}, not {value!r}")


def encode_outputs(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """The JSON response: {"predictions": rows} or {"outputs": columns}; one output unnamed."""
    values = {name: _to_json(name, array) for name, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {name: len(array) if np.ndim(array) else None for name, array in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise InvalidArgument(f"outputs of different batch sizes {sizes} need the columnar "
                              "'inputs' format")
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = next(iter(sizes.values()))
    return {"predictions": [{name: v[i] for name, v in values.items()} for i in range(rows)]}


def _to_json(name: str, array: np.ndarray) -> Any:
    if array.dtype != object:
        return array.tolist()
    # TF Serving: string outputs named *_bytes are binary and sent as {"b64": ...}.
    binary = name.endswith("_bytes")
    return np.vectorize(lambda b: _string(b, binary), otypes=[object])(array).tolist()


def _string(value: bytes, binary: bool) -> Any:
    if not binary:
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    return {B64: base64.b64encode(value).decode()}
