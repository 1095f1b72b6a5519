"""TF Serving's REST API over a ModelStore (https://www.tensorflow.org/tfx/serving/api_rest):

    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]           (model status)
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata

Errors are {"error": "<message>"} with TF Serving's HTTP status for the gRPC code.
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.errors import (
    PAYLOAD_TOO_LARGE,
    InvalidArgument,
    RequestTooLarge,
    ServingError,
    Unimplemented,
)
from serving.grpc_api import SIGNATURE_DEF_FIELD, model_metadata, model_status, resolve
from serving.model_store import ModelStore
from serving.rest_json import decode_inputs, encode_outputs, parse_predict_body

LOG = logging.getLogger("serving.rest_api")
_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<verb>:predict|:classify|:regress|/metadata)?")
IDLE_CONNECTION_SECONDS = 60


def _model_spec(match: re.Match) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=match["name"])
    if match["version"]:
        spec.version.value = int(match["version"])
    elif match["label"]:
        spec.version_label = match["label"]
    return spec


def _to_dict(message: Any) -> dict[str, Any]:
    # As TF Serving prints protos: proto field names, default values included.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


class RestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 keep-alive connection; `server.store` is the ModelStore."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid the ACK delay
    timeout = IDLE_CONNECTION_SECONDS
    server: RestServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            self._reply(200, self._handle(method, body))
        except ServingError as e:
            self._reply(PAYLOAD_TOO_LARGE if isinstance(e, RequestTooLarge) else e.http_status,
                        {"error": str(e)})
        except Exception as e:  # the server keeps serving whatever one request does
            LOG.exception("%s %s failed", method, self.path)
            self._reply(500, {"error": f"internal error: {e}"})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise InvalidArgument("Content-Length is not a number") from None
        if length > self.server.max_request_bytes:
            # Read and drop the body: closing with unread data would reset the connection,
            # and the client could lose the answer.
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise RequestTooLarge(f"request of {length} bytes is larger than the server's "
                                  f"maximum of {self.server.max_request_bytes} bytes")
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str, body: bytes) -> dict[str, Any]:
        store = self.server.store
        match = _PATH.fullmatch(self.path.split("?", 1)[0])
        verb = match["verb"] if match else None
        if match and method == "POST" and verb == ":predict":
            predict = parse_predict_body(body)
            servable = resolve(store, _model_spec(match))
            signature = servable.signature(predict.signature_name)
            outputs = servable.run(predict.signature_name,
                                   decode_inputs(predict, signature.inputs))
            return encode_outputs(outputs, predict.row_format)
        if match and method == "POST" and verb in (":classify", ":regress"):
            raise Unimplemented(f"{verb[1:]} is not implemented by the local server")
        if match and method == "GET" and verb is None:
            status = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(match))
            return _to_dict(model_status(store, status))
        if match and method == "GET" and verb == "/metadata":
            metadata = model_metadata(store, get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=_model_spec(match), metadata_field=[SIGNATURE_DEF_FIELD]))
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            metadata.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
            return {"model_spec": _to_dict(metadata.model_spec),
                    "metadata": {SIGNATURE_DEF_FIELD: _to_dict(signature_map)}}
        raise InvalidArgument(f"Malformed request: {method} {self.path}")

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)


class RestServer(ThreadingHTTPServer):
    """A thread per connection; the handlers read the store and the request size limit."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; the default 5 overflows under concurrent clients

    def __init__(self, address: tuple[str, int], store: ModelStore, max_request_bytes: int):
        self.store = store
        self.max_request_bytes = max_request_bytes
        super().__init__(address, RestHandler)
