"""Names of the exported model's interface: signatures, their inputs and outputs, assets.

No TensorFlow import here, so that light clients (serving/client.py over REST) share them.
"""

from contract.labels import LABELS_FILE

SERVING_SIGNATURE = "serving_default"  # images -> probabilities, class_index, class_name
EXAMPLES_SIGNATURE = "from_examples"  # examples -> the same (+ positive_probability); TFMA
IMAGES_INPUT = "images"  # string [None]: encoded JPEG/PNG/GIF/BMP bytes
EXAMPLES_INPUT = "examples"  # string [None]: serialized tf.Example
PROBABILITIES = "probabilities"  # float [None, classes]
CLASS_INDEX = "class_index"  # int64 [None]
CLASS_NAME = "class_name"  # string [None]
POSITIVE_PROBABILITY = "positive_probability"  # float [None], two classes only
LABELS_ASSET = LABELS_FILE  # assets/labels.txt: contract.labels' format
SAVED_MODEL_TAG = "serve"  # the MetaGraph tag TF Serving loads
MODEL_NAME = "image_classifier"  # the default model name under the serving dir
# TF Serving's warmup file inside a version: a TFRecord of PredictionLog protos, replayed at load
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

# The on-device (TFLite) models: one image of uint8 RGB pixels [1, size, size, 3], 0-255, the
# whole photo resized to size x size (bilinear, no crop) -> PROBABILITIES float32 [1, classes].
PIXELS_INPUT = "pixels"
