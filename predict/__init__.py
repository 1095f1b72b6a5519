"""Batch prediction: a pushed model classifies a folder of images or TFRecords of tf.Examples
with Beam's RunInference (`tfx-image-transfer-predict`).

    sources.py   what to classify: every file below a folder, or the images of tf.Examples
    model.py     the model version, its labels, and the RunInference model handler
    run.py       the Beam pipeline: read and check, infer, write rows and skips
    cli.py       `tfx-image-transfer-predict`
"""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
