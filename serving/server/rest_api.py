"""TF Serving's REST API over the core (https://www.tensorflow.org/tfx/serving/api_rest):

    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:(predict|classify|regress)
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]

routed as tensorflow_serving/model_servers/http_server.cc and http_rest_api_util.cc do:
paths match case-insensitively, names and labels are URL-decoded, other /v1/ paths are
400 "Malformed request", paths outside /v1/ are 404, and an OPTIONS request with an http(s)
Origin is 200. Bodies may be gzip-encoded or chunked. Errors are {"error": "<message>"}
with TF Serving's HTTP status for the status code; a body above the server's limit is 413.
HTTP itself is aiohttp's; what is kept by hand, and why: serving/README.md, REST over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from aiohttp import StreamReader, web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from contract.artifacts import INT64_MAX
from serving.errors import PAYLOAD_TOO_LARGE, InvalidArgument, RequestTooLarge
from serving.server import rest_json
from serving.server.core import SIGNATURE_DEF, ModelStore, as_serving_error

LOG = logging.getLogger("serving.server.rest")
IDLE_CONNECTION_SECONDS = 60  # between requests, and between the pieces of a body
# After a 413, the rest of the body is read and dropped for at most this long, so that a client
# still sending reads the answer instead of a reset; then the connection closes.
DRAIN_SECONDS = 10
REST_THREADS = 4 * (os.process_cpu_count() or 1)  # TF Serving's --rest_api_num_threads default
# The methods TF Serving lets evhttp take (evhttp_server.cc); others are 501.
_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}
_API = re.compile(r"(?i)/v1/.*")
_PREDICT = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                      r":(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                     r"(?:/(metadata))?")


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


def _page(status: int, reason: str) -> bytes:
    # libevent's error page (evhttp_send_error), as TF Serving sends for what it does not route
    return (f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n"
            f"</BODY></HTML>\n").encode()


def _reply(status: int, body: bytes, content_type: str | None = "application/json"
           ) -> web.Response:
    return web.Response(status=status, body=body, content_type=content_type)


def _too_large(size: int | None, limit: int) -> RequestTooLarge:
    of = f" of {size} bytes" if size is not None else ""
    return RequestTooLarge(f"request{of} is larger than the server's maximum of {limit} bytes")


class _Connection(web.RequestHandler):
    """aiohttp's HTTP/1.1 connection, with the two answers its defaults do not give: what its
    parser refuses is a JSON error, and a client that shuts its sending side still reads the
    answer to the request in progress (evhttp stops reading while it answers)."""

    body: StreamReader | None = None  # the body of the request in progress, set by RestServer
    body_cut = False  # the client stopped sending before the body's end

    def eof_received(self) -> bool:
        """The client shut its sending side: no request follows on this connection.

        Returns:
          True (the answer in progress still goes out) while a request is in progress, whose
          body, if not all came, ends there (body_cut); False when idle (closed).
        """
        if self.body is None:
            return False
        self.close()  # after the answer
        if not self.body.is_eof():
            self.body_cut = True
            self.body.feed_eof()
        return True

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        """Answers a request that aiohttp's parser refused, {"error": ...}, and closes.

        Args:
          request: the request (a placeholder when the parser refused it).
          status: aiohttp's status (400 for what does not parse).
          exc: the parser's exception.
          message: the parser's message (its first line is the reason).

        Returns:
          The answer: 413 for a Content-Length beyond 64 bits (above any limit), else status.
        """
        reason = (message or str(exc) or "internal error").split(":\n")[0].strip()
        LOG.debug("refused a request: %s", reason)
        error = f"Malformed HTTP request: {reason}"
        if reason == "Content-Length overflow":  # llhttp's words for a length beyond 2**64
            status, error = PAYLOAD_TOO_LARGE, "request larger than 2^64 bytes"
        response = _reply(status, rest_json.error_body(error))
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, its connections _Connection."""

    def __call__(self) -> _Connection:
        """A connection's protocol (asyncio calls this for each connection).

        Returns:
          The connection: idle for IDLE_CONNECTION_SECONDS at most, the body inflated here.
        """
        return _Connection(self, loop=asyncio.get_running_loop(), access_log=None,
                           auto_decompress=False, keepalive_timeout=IDLE_CONNECTION_SECONDS,
                           lingering_time=DRAIN_SECONDS)


class RestServer:
    """TF Serving's REST API over the store on aiohttp, start() to stop(): an event loop
    thread reads and frames the requests (Content-Length, chunked, keep-alive), a pool of
    REST_THREADS threads answers them (gzip, JSON, the model); bodies above max_request_bytes
    are refused with 413, the rest of them read and dropped for at most DRAIN_SECONDS.

    Raises:
      OSError: the address cannot be bound.
    """

    def __init__(self, address: tuple[str, int], store: ModelStore, max_request_bytes: int):
        self.store = store
        self.max_request_bytes = max_request_bytes
        self._socket = socket.create_server(address, backlog=128)
        self.server_address: tuple[str, int] = self._socket.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest",
                                        daemon=True)
        self._pool = ThreadPoolExecutor(REST_THREADS, thread_name_prefix="rest")
        self._runner: web.ServerRunner | None = None

    def start(self) -> None:
        """Serves on the bound address from a thread of its own."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result()

    def stop(self) -> None:
        """Stops serving (requests in progress get a second) and releases the address."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _listen(self) -> None:
        self._runner = web.ServerRunner(_Server(self._answer), shutdown_timeout=1)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def _close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        # What cleanup leaves (a drain after a 413) ends here, as asyncio.run ends its tasks.
        rest = asyncio.all_tasks() - {asyncio.current_task()}
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _answer(self, request: web.BaseRequest) -> web.Response:
        connection = request.protocol
        assert isinstance(connection, _Connection)
        connection.body = request.content
        try:
            body = await self._read_body(request, connection)
        except RequestTooLarge as e:  # the rest of the body is drained after the answer
            return _reply(PAYLOAD_TOO_LARGE, rest_json.error_body(str(e)))
        except InvalidArgument as e:  # the body ended early: the stream is lost
            response = _reply(400, rest_json.error_body(str(e)))
            response.force_close()
            return response
        except TimeoutError:  # a body that stopped coming: no answer, as from evhttp
            connection.force_close()
            return web.Response()  # not sent: the connection is closed
        else:
            status, answer, content_type = await self._loop.run_in_executor(
                self._pool, self._respond, request.method, request.raw_path, request.headers,
                body)
            return _reply(status, answer, content_type)
        finally:
            connection.body = None

    async def _read_body(self, request: web.BaseRequest, connection: _Connection) -> bytes:
        limit = self.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(request.content_length, limit)  # before reading it
        if request.headers.get("Expect", "").lower() == "100-continue":  # as evhttp answers
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        size, parts = 0, []
        while True:
            async with asyncio.timeout(IDLE_CONNECTION_SECONDS):
                part = await request.content.readany()
            if not part:
                if connection.body_cut:
                    raise InvalidArgument("the body ended early")
                return b"".join(parts)
            size += len(part)
            if size > limit:
                raise _too_large(None, limit)
            parts.append(part)

    def _respond(self, method: str, path: str, headers: Mapping[str, str], body: bytes
                 ) -> tuple[int, bytes, str | None]:
        """The status, body and content type of TF Serving's answer (in a pool thread)."""
        if method not in _METHODS:
            return 501, _page(501, "Not Implemented"), "text/html"
        if "gzip" in headers.get("Content-Encoding", ""):
            try:
                body = _inflate(body, self.max_request_bytes)
            except RequestTooLarge as e:
                return PAYLOAD_TOO_LARGE, rest_json.error_body(str(e)), "application/json"
        if not _API.fullmatch(path):
            return 404, _page(404, "Not Found"), "text/html"
        if method == "OPTIONS":  # a CORS preflight
            return 200 if re.search(r"https?://", headers.get("Origin", "")) else 400, b"", None
        try:
            return 200, handle(self.store, method, path, body), "application/json"
        except Exception as e:  # every failure is an answer; the server keeps serving
            error = as_serving_error(e)
            return error.http_status, rest_json.error_body(str(error)), "application/json"


def _inflate(body: bytes, limit: int) -> bytes:
    # As TF Serving's evhttp_request.cc: the whole body is inflated after it is read, and one
    # that does not inflate is empty.
    try:
        body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, limit + 1)
    except zlib.error:
        return b""
    if len(body) > limit:
        raise RequestTooLarge(f"request inflates to more than the server's maximum of {limit} "
                              "bytes")
    return body
