"""Errors shared by the clients and the local server: TF Serving's gRPC status codes and the
HTTP status its REST API answers for each (tensorflow_serving/model_servers/http_server.cc)."""

from __future__ import annotations

import grpc
from grpc import StatusCode

HTTP_STATUS: dict[StatusCode, int] = {
    StatusCode.CANCELLED: 499, StatusCode.UNKNOWN: 500, StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504, StatusCode.NOT_FOUND: 404, StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403, StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400, StatusCode.ABORTED: 409, StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501, StatusCode.INTERNAL: 500, StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500, StatusCode.UNAUTHENTICATED: 401,
}
# Not a TF Serving answer (it has no request size limit on REST): the local server's and an
# HTTP proxy's answer to a body above the limit.
PAYLOAD_TOO_LARGE = 413
# TF Serving's C++ status codes are gRPC's; tf.errors.OpError.error_code uses the same numbers.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request that TF Serving (or the local server) refused, or that could not be sent."""

    code: grpc.StatusCode = StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers for `code`.

        Returns:
          The status, e.g. 404 for NOT_FOUND; 500 for a code without one.
        """
        return HTTP_STATUS.get(self.code, 500)


class NotFound(ServingError):
    """Unknown model, version or version label."""

    code = StatusCode.NOT_FOUND


class InvalidArgument(ServingError):
    """A malformed request: not an image, bad base64, wrong input names or types."""

    code = StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServingError):
    """TF Serving's gRPC answer to an unknown signature name (predict_util.cc)."""

    code = StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServingError):
    """The server (or gRPC) is out of a resource, e.g. the request is above its size limit."""

    code = StatusCode.RESOURCE_EXHAUSTED


class RequestTooLarge(ResourceExhausted):
    """A request above the client's or the server's maximum request size."""


class Unavailable(ServingError):
    """The server cannot be reached, or has no version of the model loaded yet."""

    code = StatusCode.UNAVAILABLE


class DeadlineExceeded(ServingError):
    """No answer within the timeout."""

    code = StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ServingError):
    """An API the server does not offer (the local server: MultiInference, ...)."""

    code = StatusCode.UNIMPLEMENTED


_CLASSES: dict[grpc.StatusCode, type[ServingError]] = {
    cls.code: cls for cls in (NotFound, InvalidArgument, FailedPrecondition, ResourceExhausted,
                              Unavailable, DeadlineExceeded, Unimplemented)}


def code_name(number: int) -> str:
    """The name of a status code number (TF Serving's StatusProto.error_code): 5 -> NOT_FOUND.

    Args:
      number: a gRPC status code number (0-16).

    Returns:
      The code's name; "UNKNOWN" for a number that is no code.
    """
    return _BY_NUMBER.get(number, StatusCode.UNKNOWN).name


def error_for_code(code: grpc.StatusCode | int, message: str) -> ServingError:
    """The ServingError subclass for a gRPC status code (or its number).

    Args:
      code: the status code, or its number (a number that is no code means UNKNOWN).
      message: the error message.

    Returns:
      An instance of the code's subclass (NotFound, InvalidArgument, ...), or of ServingError
      for a code without one; its `code` is the given code.
    """
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, StatusCode.UNKNOWN)
    return _CLASSES.get(code, ServingError)(message, code)


def error_for_http(status: int, message: str) -> ServingError:
    """The ServingError for a TF Serving REST error answer (HTTP status + {"error": ...}).

    Args:
      status: the HTTP status code.
      message: the answer's "error" text.

    Returns:
      RequestTooLarge for 413; else the error of the first gRPC code (in code order) that TF
      Serving answers with that status, UNKNOWN if none does.
    """
    if status == PAYLOAD_TOO_LARGE:
        return RequestTooLarge(message)
    # Several codes share a status; the first (in gRPC code order) is the usual one.
    code = next((c for c, s in HTTP_STATUS.items() if s == status), StatusCode.UNKNOWN)
    return error_for_code(code, message)
