"""Fixes what `tf.keras` means before TensorFlow loads; every package imports it first.

Project code uses Keras 3 as `keras`; TFMA needs `tf.keras` to be tf-keras (Keras 2). Importing
tfx sets TF_USE_LEGACY_KERAS only when it is unset, so without this the meaning of `tf.keras`
would depend on import order.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
