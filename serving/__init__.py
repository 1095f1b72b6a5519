"""Serving the pushed models: TF Serving files (models.config, batching.config,
docker-compose.yml), the warmup file written at export, gRPC/REST clients and their CLI
(`python -m serving.client`), and a local TF Serving-compatible development server
(`python -m serving.local_server`). Production serving is the tensorflow/serving image."""
