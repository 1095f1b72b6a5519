"""Serving the pushed models: TF Serving files (models.config, batching.config,
docker-compose.yml), gRPC/REST clients and their command (`tfx-image-transfer-client`), and the
local TF Serving-compatible development server in serving/server/ (`tfx-image-transfer-server`).
Production serving is the tensorflow/serving image."""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
