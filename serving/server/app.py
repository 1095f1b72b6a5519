"""The local server: the core behind a gRPC server and a REST server, started and stopped
together, and its command line (`tfx-image-transfer-server`; tests also run it in-process).

Flags follow tensorflow_model_server's where it has them: --grpc-port (--port), --rest-port
(--rest_api_port), --model-name, --model-base-path, --model-config-file (version policy and
labels; without it only the newest version is served), --poll-seconds (its two poll waits),
--enable-batching and --batching-parameters-file (--enable_batching,
--batching_parameters_file). Without batching, --max-batch-size bounds the images per request
(not a TF Serving flag). Start-up errors are one line and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from serving.constants import DEFAULT_MAX_REQUEST_BYTES, GRPC_PORT, REST_PORT
from serving.server.batching import (
    SHIPPED_BATCHING_FILE,
    BatchLimits,
    guard,
    read_batching_limits,
    shipped_max_batch_size,
)
from serving.server.core import ModelStore
from serving.server.grpc_api import create_grpc_server
from serving.server.loader import load_like_tf_serving
from serving.server.rest_api import RestServer


class LocalServer:
    """One model's versions (see ModelStore) over TF Serving's gRPC and REST APIs; start()
    and stop(), or `with`. The model name defaults to the base path's directory name; port 0
    picks a free port; requests above max_request_bytes are refused (RESOURCE_EXHAUSTED, 413);
    batch_limits (see serving.server.batching) bound the images per request and say how they
    are run (None: any batch runs whole; the command always sets them).

    Raises:
      OSError or RuntimeError (gRPC): a port cannot be bound; ValueError: a bad config file.
    """

    def __init__(self, model_base_path: str, model_name: str | None = None,
                 host: str = "127.0.0.1", grpc_port: int = GRPC_PORT, rest_port: int = REST_PORT,
                 model_config_file: str | None = None, poll_seconds: float = 1.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 batch_limits: BatchLimits | None = None):
        self.model_base_path = os.path.abspath(model_base_path)
        self.model_name = model_name or os.path.basename(self.model_base_path.rstrip("/"))
        self.host, self.batch_limits = host, batch_limits
        self.store = ModelStore(self.model_base_path, self.model_name, model_config_file,
                                poll_seconds,
                                functools.partial(load_like_tf_serving, limits=batch_limits))
        self._grpc, self.grpc_port = create_grpc_server(
            self.store, f"{host}:{grpc_port}", max_request_bytes, batch_limits)
        try:
            self._rest = RestServer((host, rest_port), self.store, max_request_bytes)
        except OSError as e:
            self._grpc.stop(None)
            raise OSError(f"cannot serve REST on {host}:{rest_port}: {e.strerror}") from e
        self.rest_port = self._rest.server_address[1]

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC API.

        Returns:
          E.g. "127.0.0.1:8500"; the bound port when 0 was asked for.
        """
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        """http://host:port of the REST API.

        Returns:
          E.g. "http://127.0.0.1:8501"; the bound port when 0 was asked for.
        """
        return f"http://{self.host}:{self.rest_port}"

    def start(self) -> LocalServer:
        """Loads the current versions, then starts polling and both APIs.

        Returns:
          The server itself.
        """
        self.store.start()
        self._grpc.start()
        self._rest.start()
        return self

    def stop(self) -> None:
        """Stops both APIs (in-flight calls get a second), then unloads the versions."""
        self._rest.stop()
        self._grpc.stop(grace=1).wait()
        self.store.stop()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags.

    Returns:
      The parser (tensorflow_model_server's flag names where it has them).
    """
    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer-server",
        description="Development server speaking TF Serving's gRPC and REST APIs for one model "
                    "(production: the tensorflow/serving image, see serving/docker-compose.yml).")
    parser.add_argument("--model-base-path", required=True,
                        help="directory of numeric version directories (the Pusher's output)")
    parser.add_argument("--model-name", help="default: the base path's directory name")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    parser.add_argument("--rest-port", type=int, default=REST_PORT)
    parser.add_argument("--model-config-file",
                        help="a models.config (TF Serving text format): the model's "
                             "model_version_policy and version_labels, re-read when changed; "
                             "without it only the newest version is served")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to look for new versions and config changes (default 1)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="larger requests are refused (gRPC RESOURCE_EXHAUSTED, HTTP 413)")
    parser.add_argument("--enable-batching", action="store_true",
                        help="apply --batching-parameters-file as TF Serving's --enable_batching "
                             "does: a request of more images than its max_batch_size is refused "
                             "(INVALID_ARGUMENT, HTTP 400); with enable_large_batch_splitting it "
                             "runs in pieces of at most max_execution_batch_size")
    parser.add_argument("--batching-parameters-file", default=str(SHIPPED_BATCHING_FILE),
                        help="BatchingParameters in text format (default: the shipped "
                             "serving/batching.config, which serving/docker-compose.yml gives "
                             "TF Serving)")
    parser.add_argument("--max-batch-size", type=int,
                        help="without --enable-batching, a request of more images is refused "
                             "(INVALID_ARGUMENT, HTTP 400; default: the max_batch_size of the "
                             "shipped serving/batching.config); not a TF Serving flag: TF "
                             "Serving without batching runs a batch of any size")
    return parser


def batch_limits_of(args: argparse.Namespace) -> BatchLimits:
    """The batch limits the flags ask for.

    Args:
      args: the parsed flags (enable_batching, batching_parameters_file, max_batch_size).

    Returns:
      The batching file's limits with --enable-batching, else the --max-batch-size guard.

    Raises:
      ValueError: one line: both --enable-batching and --max-batch-size, a --max-batch-size
        below 1, or a batching file that is unreadable, does not parse or TF Serving refuses.
    """
    if args.enable_batching:
        if args.max_batch_size is not None:
            raise ValueError("--max-batch-size applies without --enable-batching; with it, the "
                             "batching parameters file's max_batch_size limits requests")
        return read_batching_limits(args.batching_parameters_file)
    size = shipped_max_batch_size() if args.max_batch_size is None else args.max_batch_size
    if size < 1:
        raise ValueError("--max-batch-size must be at least 1")
    return guard(size)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGINT or SIGTERM.

    Args:
      argv: the flags (default: sys.argv).

    Returns:
      The exit status: 0 after a signal, 2 for a start-up error.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "Restoring parameters" per load
    if args.max_request_bytes < 1:
        print("error: --max-request-bytes must be at least 1", file=sys.stderr)
        return 2
    if not os.path.isdir(args.model_base_path):
        print(f"error: --model-base-path {args.model_base_path} is not a directory",
              file=sys.stderr)
        return 2
    try:
        server = LocalServer(args.model_base_path, args.model_name, args.host, args.grpc_port,
                             args.rest_port, args.model_config_file, args.poll_seconds,
                             args.max_request_bytes, batch_limits_of(args))
    except (OSError, RuntimeError, ValueError) as e:  # port in use (gRPC: RuntimeError), config
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    versions = ", ".join(map(str, server.store.versions)) or "none yet"
    limits = server.batch_limits
    print(f"serving {server.model_name} (versions: {versions}) from {server.model_base_path}: "
          f"gRPC {server.grpc_address}, REST {server.rest_url}; at most {limits.max_batch_size} "
          f"images per request ({'batching' if limits.batching else '--max-batch-size'}"
          + (f", run {limits.execution_batch_size} at a time" if
             limits.execution_batch_size < limits.max_batch_size else "") + ")", flush=True)
    stop.wait()
    server.stop()
    return 0

