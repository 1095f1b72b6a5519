"""Pipeline definition, configuration and runners (local and Kubeflow); wires every package."""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
