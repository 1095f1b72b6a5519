"""Names the serving side shares: the model's interface (defined in contract/interface.py, the
one home), the default model name, and TF Serving's ports and limits."""

from __future__ import annotations

from contract import interface

MODEL_NAME = interface.MODEL_NAME
IMAGES_INPUT = interface.IMAGES_INPUT
PROBABILITIES = interface.PROBABILITIES
CLASS_INDEX = interface.CLASS_INDEX
CLASS_NAME = interface.CLASS_NAME

GRPC_PORT = 8500  # tensorflow/serving's --port
REST_PORT = 8501  # tensorflow/serving's --rest_api_port
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
