"""TF Serving's ports and the clients' limits. The model's interface (signature, tensor names,
the default model name) is contract/interface.py's."""

from __future__ import annotations

GRPC_PORT = 8500  # tensorflow/serving's --port
REST_PORT = 8501  # tensorflow/serving's --rest_api_port
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
