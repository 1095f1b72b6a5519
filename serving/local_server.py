"""The development server: TF Serving's gRPC and REST APIs for one model, offline, in Python.

    python -m serving.local_server --model-base-path outputs/serving/image_classifier

It serves every complete version under the model base path (the newest by default; others by
version number or label), picks up newly pushed versions without a restart, replays warmup
requests on load, and answers errors with TF Serving's status codes. It binds 127.0.0.1 by
default. Production serving is the tensorflow/serving image (serving/docker-compose.yml).
"""

from __future__ import annotations

import os

# Explicit before TensorFlow loads, as in every entry point (importing tfx or tensorflow_transform
# would set it only when unset, so what tf.keras means would depend on import order).
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from serving.constants import DEFAULT_MAX_REQUEST_BYTES, GRPC_PORT, REST_PORT  # noqa: E402
from serving.grpc_api import create_grpc_server  # noqa: E402
from serving.model_store import ModelStore, read_model_config  # noqa: E402
from serving.rest_api import RestServer  # noqa: E402

LOG = logging.getLogger("serving.local_server")


class LocalServer:
    """A ModelStore behind a gRPC server and a REST server; start() and stop(), or `with`."""

    def __init__(self, model_base_path: str, model_name: str | None = None,
                 host: str = "127.0.0.1", grpc_port: int = GRPC_PORT, rest_port: int = REST_PORT,
                 version_labels: dict[str, int] | None = None,
                 model_config_file: str | None = None, poll_seconds: float = 1.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.model_base_path = os.path.abspath(model_base_path)
        self.model_name = model_name or os.path.basename(self.model_base_path.rstrip("/"))
        self.host = host
        self.store = ModelStore(self.model_base_path, self.model_name, version_labels,
                                model_config_file, poll_seconds)
        self._grpc, self.grpc_port = create_grpc_server(
            self.store, f"{host}:{grpc_port}", max_request_bytes)
        try:
            self._rest = RestServer((host, rest_port), self.store, max_request_bytes)
        except OSError as e:
            self._grpc.stop(None)
            raise OSError(f"cannot serve REST on {host}:{rest_port}: {e.strerror}") from e
        self.rest_port = self._rest.server_address[1]
        self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="rest",
                                             daemon=True)

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    def start(self) -> LocalServer:
        """Loads the current versions, then starts polling and both APIs."""
        self.store.start()
        self._grpc.start()
        self._rest_thread.start()
        return self

    def stop(self) -> None:
        """Stops both APIs (in-flight gRPC calls get a second) and the polling."""
        if self._rest_thread.is_alive():
            self._rest.shutdown()
        self._rest.server_close()
        self._grpc.stop(grace=1).wait()
        self.store.stop()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_labels(text: str) -> dict[str, int]:
    """"stable=1,canary=2" -> {"stable": 1, "canary": 2}."""
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, version = item.partition("=")
        if not sep or not name or not version.isdigit():
            raise argparse.ArgumentTypeError(f"expected LABEL=VERSION, got {item!r}")
        labels[name] = int(version)
    return labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.local_server",
        description="Development server speaking TF Serving's gRPC and REST APIs for one model "
                    "(production: the tensorflow/serving image, see serving/docker-compose.yml).")
    parser.add_argument("--model-base-path", required=True,
                        help="directory of numeric version directories (the Pusher's output)")
    parser.add_argument("--model-name", help="default: the base path's directory name")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    parser.add_argument("--rest-port", type=int, default=REST_PORT)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--version-labels", type=parse_labels, default={},
                        help="version labels, e.g. stable=1700000000,canary=1700003600")
    labels.add_argument("--model-config-file",
                        help="a models.config (TF Serving text format): the model's "
                             "version_labels and model_version_policy, re-read when changed")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to look for new versions (default 1)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="larger requests are refused (gRPC RESOURCE_EXHAUSTED, HTTP 413)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not os.path.isdir(args.model_base_path):
        print(f"error: --model-base-path {args.model_base_path} is not a directory",
              file=sys.stderr)
        return 2
    try:
        server = LocalServer(args.model_base_path, args.model_name, args.host, args.grpc_port,
                             args.rest_port, args.version_labels, args.model_config_file,
                             args.poll_seconds, args.max_request_bytes)
        if args.model_config_file:
            read_model_config(args.model_config_file, server.model_name)  # fail before serving
    except (OSError, RuntimeError, ValueError) as e:  # port in use (gRPC: RuntimeError), config
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    versions = ", ".join(map(str, server.store.versions)) or "none yet"
    print(f"serving {server.model_name} (versions: {versions}) from {server.model_base_path}: "
          f"gRPC {server.grpc_address}, REST {server.rest_url}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
