"""The Trainer's module: input, model, two-phase training and export."""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
