"""TF Serving's REST API over the core (https://www.tensorflow.org/tfx/serving/api_rest):

    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify|regress)
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]

routed as tensorflow_serving/model_servers/http_server.cc and http_rest_api_util.cc do:
paths match case-insensitively, names and labels are URL-decoded, other /v1/ paths are
400 "Malformed request", paths outside /v1/ are 404, and an OPTIONS request with an http(s)
Origin is 200. Bodies may be gzip-encoded or chunked. Errors are {"error": "<message>"}
with TF Serving's HTTP status for the status code; a body above the server's limit is 413.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from contract.artifacts import INT64_MAX
from serving.errors import PAYLOAD_TOO_LARGE, InvalidArgument, RequestTooLarge
from serving.server import rest_json
from serving.server.core import SIGNATURE_DEF, ModelStore, as_serving_error

LOG = logging.getLogger("serving.server.rest")
IDLE_CONNECTION_SECONDS = 60
# A body declared above the limit is read and dropped for at most this long, and only while
# it keeps coming (then the 413 goes out and the connection closes).
DRAIN_SECONDS, DRAIN_IDLE_SECONDS = 10, 2
_API = re.compile(r"(?i)/v1/.*")
_PREDICT = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                      r":(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                     r"(?:/(metadata))?")
_NOT_FOUND = (b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
              b"</BODY></HTML>\n")  # libevent's page


def handle(store: ModelStore, method: str, path: str, body: bytes) -> bytes:
    """Answers one /v1/ request as TF Serving's HttpRestApiHandler::ProcessRequest.

    Args:
      store: the versions to answer from.
      method: the HTTP method, e.g. "POST".
      path: the request target as sent (still URL-encoded, query included).
      body: the request body, inflated if it was gzipped.

    Returns:
      The JSON response body; failures raise the ServingError to answer with.

    Raises:
      InvalidArgument: a version number above the int64 maximum, a GET without a model
        name, or a method and path that no route takes ("Malformed request").
    """
    pattern = {"POST": _PREDICT, "GET": _STATUS}.get(method)
    match = pattern.fullmatch(path) if pattern else None
    name, version, label, verb = match.groups() if match else (None,) * 4
    spec = model_pb2.ModelSpec(name=unquote(name or ""))
    if version:
        if int(version) > INT64_MAX:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    elif label:
        spec.version_label = unquote(label)
    if match and method == "POST" and verb == "predict":  # the verb itself is case-sensitive
        doc = rest_json.parse_request(body)
        spec.signature_name = doc.get("signature_name", "")
        row_format = []

        def decode(signature_inputs: Any) -> dict[str, Any]:
            inputs, row = rest_json.decode_inputs(doc, signature_inputs)
            row_format.append(row)
            return inputs

        # One version held from decoding the JSON (by its signature's dtypes) to the run.
        return rest_json.encode_outputs(store.predict(spec, decode)[1], row_format[0])
    if match and method == "POST" and verb in ("classify", "regress"):
        doc = rest_json.parse_request(body)
        rest_json.check_examples(doc)
        spec.signature_name = doc.get("signature_name", "")
        store.reject_classify_or_regress(spec, verb)
    if match and method == "GET":
        if not spec.name:
            raise InvalidArgument("Missing model name in request.")
        if verb == "metadata":
            metadata = store.model_metadata(get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[SIGNATURE_DEF]))
            signatures = get_model_metadata_pb2.SignatureDefMap()
            metadata.metadata[SIGNATURE_DEF].Unpack(signatures)
            return (f'{{"model_spec": {_json(metadata.model_spec)}, '
                    f'"metadata": {{"{SIGNATURE_DEF}": {_json(signatures)}}}}}').encode()
        status = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        return _json(store.model_status(status)).encode()
    raise InvalidArgument(f"Malformed request: {method} {path}")


def _json(message: Any) -> str:
    # As TF Serving prints protos: proto field names, fields with default values included.
    return json_format.MessageToJson(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True, indent=1)


class RestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 keep-alive connection; `server` holds the store and the size limit."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid the ACK delay
    timeout = IDLE_CONNECTION_SECONDS
    server: RestServer

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except InvalidArgument as e:  # a broken length or chunk: the stream is lost
            self.close_connection = True
            return self._reply(400, rest_json.error_body(str(e)))
        except RequestTooLarge as e:
            return self._reply(PAYLOAD_TOO_LARGE, rest_json.error_body(str(e)))
        if not _API.fullmatch(self.path):
            return self._reply(404, _NOT_FOUND, "text/html")
        if self.command == "OPTIONS":  # a CORS preflight
            origin = re.search(r"https?://", self.headers.get("Origin", ""))
            return self._reply(200 if origin else 400, b"", None)
        try:
            self._reply(200, handle(self.server.store, self.command, self.path, body))
        except Exception as e:  # every failure is an answer; the server keeps serving
            error = as_serving_error(e)
            self._reply(error.http_status, rest_json.error_body(str(error)))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        limit = self.server.max_request_bytes
        declared = self.headers.get("Content-Length") or ""
        if declared.isdigit() and int(declared) > limit:
            # Refused without keeping the body. The body is read and dropped for a bounded time,
            # so that a client still sending reads the 413 instead of a reset; when it does
            # not all arrive in that time (a length that no body follows cannot hold the
            # thread), the connection closes after the answer.
            self.close_connection = not self._drain(int(declared))
            raise RequestTooLarge(f"request of {declared} bytes is larger than the server's "
                                  f"maximum of {limit} bytes")
        size, parts = 0, []
        for part in self._body_parts():
            size += len(part)
            if size <= limit:  # past the limit, the rest is read and dropped: closing with
                parts.append(part)  # unread data would reset the connection and lose the answer
        if size > limit:
            raise RequestTooLarge(f"request of {size} bytes is larger than the server's "
                                  f"maximum of {limit} bytes")
        body = b"".join(parts)
        if "gzip" in self.headers.get("Content-Encoding", ""):
            try:  # a body that does not inflate is empty, as in TF Serving
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                body = inflater.decompress(body, limit + 1)
            except zlib.error:
                body = b""
            if len(body) > limit:
                raise RequestTooLarge(f"request inflates to more than the server's maximum of "
                                      f"{limit} bytes")
        return body

    def _drain(self, size: int) -> bool:
        """Reads and drops `size` body bytes within the drain limits; True if all came."""
        deadline = time.monotonic() + DRAIN_SECONDS
        self.connection.settimeout(DRAIN_IDLE_SECONDS)
        try:
            while size > 0 and time.monotonic() < deadline:
                part = self.rfile.read1(min(size, 1 << 20))
                if not part:
                    return False
                size -= len(part)
        except OSError:  # the idle timeout, or the client gave up
            return False
        self.connection.settimeout(self.timeout)
        return size == 0

    def _body_parts(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0], 16)
                except ValueError:
                    raise InvalidArgument(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return
                yield from self._read_exactly(size)
                self.rfile.readline(8)  # the CRLF after the chunk
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            raise InvalidArgument(f"bad Content-Length {length!r}")
        yield from self._read_exactly(int(length))

    def _read_exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            part = self.rfile.read(min(size, 1 << 20))
            if not part:
                raise InvalidArgument("the body ended early")
            size -= len(part)
            yield part

    def _reply(self, status: int, body: bytes, content_type: str | None = "application/json"
               ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:  # so that a client does not reuse the connection
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Logs each request at DEBUG instead of printing it to stderr."""
        LOG.debug("%s " + format, self.address_string(), *args)


class RestServer(ThreadingHTTPServer):
    """A thread per connection, over the store, refusing bodies above max_request_bytes."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; the default 5 overflows under concurrent clients

    def __init__(self, address: tuple[str, int], store: ModelStore, max_request_bytes: int):
        self.store = store
        self.max_request_bytes = max_request_bytes
        super().__init__(address, RestHandler)
