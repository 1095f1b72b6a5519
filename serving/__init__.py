"""Serving the pushed models: TF Serving files (models.config, batching.config,
docker-compose.yml), gRPC/REST clients and their CLI (`python -m serving.client`), and the
local TF Serving-compatible development server in serving/server/ (`python -m serving.server`).
Production serving is the tensorflow/serving image."""
