"""The on-device record of a model folder (tflite/on_device.json), read by the report and the
run summary; components.on_device writes it."""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from contract.artifacts import ON_DEVICE_FILE, TFLITE_DIR

ON_DEVICE_NODE = "OnDeviceGate"  # the gate's component id in the pipeline


def saved_model_bytes(model_dir: str) -> int:
    """The bytes of a model folder's SavedModel files, its tflite/ folder left out.

    Args:
      model_dir: a SavedModel folder (local or a tf.io.gfile URI).

    Returns:
      The total size of its files.
    """
    return sum(tf.io.gfile.stat(os.path.join(d, f)).length
               for d, _, files in tf.io.gfile.walk(model_dir)
               if TFLITE_DIR not in os.path.relpath(d, model_dir).split(os.sep)
               for f in files)


def read_on_device(model_dir: str) -> dict[str, Any] | None:
    """The on-device record of a model folder (an OnDeviceGate output or a pushed version).

    Args:
      model_dir: a SavedModel folder.

    Returns:
      on_device.json's content, or None when the folder has none.
    """
    path = os.path.join(model_dir, TFLITE_DIR, ON_DEVICE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
