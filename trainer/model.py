"""The model: MobileNetV2 base under a new head, and the phase-2 unfreeze."""

from __future__ import annotations

import hashlib
import os
import tempfile

import keras
import tensorflow as tf

from trainer.config import TrainingConfig

IMAGENET = "imagenet"
NO_WEIGHTS = "none"
BASE_NAME = "mobilenetv2_base"
WRAPPER_NAME = "base_inference_mode"
FEATURES_LAYER = "pool"  # the pooled base features: what phase 1's feature cache holds
HEAD_LAYERS = ("dropout", "logits")  # the layers on top of FEATURES_LAYER, in order


@keras.saving.register_keras_serializable(package="tfx_image_transfer")
class InferenceMode(keras.layers.Layer):
    """Calls the wrapped model with training=False, whatever the outer call says.

    The tutorial writes `base_model(x, training=False)` so that BatchNormalization keeps its
    ImageNet moving statistics while the top of the base fine-tunes. In a Keras 3 functional
    model that argument is overridden by the outer `training` flag, so the wrapper enforces it.
    """

    def __init__(self, inner: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs):
        """The wrapped model's output for inputs, always in inference mode."""
        return self.inner(inputs, training=False)

    def compute_output_shape(self, input_shape):
        """The wrapped model's output shape."""
        return self.inner.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        """The layer's config with the wrapped model serialized under "inner"."""
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner)}

    @classmethod
    def from_config(cls, config: dict) -> InferenceMode:
        """The layer from get_config's output."""
        inner = keras.saving.deserialize_keras_object(config.pop("inner"))
        return cls(inner, **config)


class WeightsError(RuntimeError):
    """The base weights cannot be loaded (no network for imagenet, missing or mismatched file)."""


def local_weights_file(uri: str) -> str:
    """A local path of a weights file given as a path or any tf.io.gfile URI (gs://...).

    Keras loads .h5 files from local paths only, so a remote file is copied once into a
    temporary folder first.

    Args:
      uri: a local path or a remote URI of a no-top MobileNetV2 .h5 file.

    Returns:
      The local path.

    Raises:
      WeightsError: the file does not exist or cannot be read, in one line.
    """
    missing = WeightsError(f"base weights file {uri!r} does not exist "
                           "(use imagenet, none, or the path or URI of a MobileNetV2 no-top .h5)")
    if "://" not in uri:
        if not os.path.isfile(uri):
            raise missing
        return uri
    local = os.path.join(tempfile.gettempdir(), "tfx-image-transfer-weights",
                         hashlib.sha256(uri.encode()).hexdigest()[:16], os.path.basename(uri))
    if os.path.isfile(local):
        return local
    try:
        if not tf.io.gfile.exists(uri):
            raise missing
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tf.io.gfile.copy(uri, local + ".part", overwrite=True)
    except (tf.errors.OpError, OSError) as e:
        raise WeightsError(f"cannot read base weights {uri!r}: "
                           f"{getattr(e, 'message', None) or e}") from None
    os.replace(local + ".part", local)
    return local


def build_base(image_size: int, alpha: float, base_weights: str) -> keras.Model:
    """MobileNetV2 without its top, frozen, with weights from imagenet, a local .h5, or none.

    Args:
      image_size: the input side, in pixels (input shape [image_size, image_size, 3]).
      alpha: MobileNetV2's width multiplier; must match a weights file's.
      base_weights: "imagenet" (downloaded), "none" (random), or the path or tf.io.gfile URI
        of a no-top .h5.

    Returns:
      The frozen base, named mobilenetv2_base.

    Raises:
      WeightsError: the weights cannot be downloaded, the file is missing, or it does not
        load into this MobileNetV2.
    """
    shape = (image_size, image_size, 3)
    if base_weights == NO_WEIGHTS:
        weights = None
    elif base_weights == IMAGENET:
        weights = IMAGENET
    else:
        weights = local_weights_file(base_weights)
    try:
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                              weights=weights)
    except Exception as e:  # Keras raises several types for download and load failures
        if weights == IMAGENET:
            raise WeightsError(
                f"could not download the ImageNet weights for MobileNetV2 (alpha={alpha}, "
                f"{image_size}px): {e}. Without network access pass --base-weights with a local "
                "no-top .h5 file (for example mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
                f"{alpha}_224_no_top.h5) and the matching --alpha.") from e
        if weights is not None:
            raise WeightsError(f"could not load {weights!r} into MobileNetV2 alpha={alpha}: {e}. "
                               "Is --alpha the one the file was trained with?") from e
        raise
    base.name = BASE_NAME
    base.trainable = False
    return base


def build_model(num_classes: int, cfg: TrainingConfig) -> keras.Model:
    """Input float32 [0, 255] images -> logits (one for two classes, else one per class).

    Augmentation and MobileNetV2's rescaling to [-1, 1] are layers of the model, so serving
    feeds the same [0, 255] images the training input does.

    Args:
      num_classes: the number of classes, at least two.
      cfg: the knobs used here: image_size, alpha, base_weights, dropout, rotation,
        horizontal_flip, seed.

    Returns:
      The uncompiled model, its base frozen.

    Raises:
      ValueError: fewer than two classes.
      WeightsError: the base weights cannot be loaded.
    """
    if num_classes < 2:
        raise ValueError("need at least two classes")
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    x = inputs
    if cfg.horizontal_flip:
        x = keras.layers.RandomFlip("horizontal", seed=cfg.seed, name="augment_flip")(x)
    if cfg.rotation:
        x = keras.layers.RandomRotation(cfg.rotation, seed=cfg.seed, name="augment_rotation")(x)
    # == keras.applications.mobilenet_v2.preprocess_input, as a layer.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
    base = build_base(cfg.image_size, cfg.alpha, cfg.base_weights)
    x = InferenceMode(base, name=WRAPPER_NAME)(x)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    dropout_name, logits_name = HEAD_LAYERS
    x = keras.layers.Dropout(cfg.dropout, seed=cfg.seed, name=dropout_name)(x)
    outputs = keras.layers.Dense(1 if num_classes == 2 else num_classes, name=logits_name)(x)
    return keras.Model(inputs, outputs, name="image_classifier")


def base_of(model: keras.Model) -> keras.Model:
    """The MobileNetV2 base inside the model.

    Args:
      model: a model from build_model.

    Returns:
      The base model wrapped by its InferenceMode layer.
    """
    return model.get_layer(WRAPPER_NAME).inner


def is_binary(model: keras.Model) -> bool:
    """Whether the model has the two-class head (a single logit).

    Args:
      model: a model from build_model.

    Returns:
      True for one output logit, else False.
    """
    return model.output_shape[-1] == 1


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                  steps_per_execution: int = 1) -> None:
    """Logit losses and an accuracy metric named `accuracy` for either head.

    Args:
      model: a model from build_model; compiled in place.
      optimizer: the optimizer to compile with.
      steps_per_execution: training steps per call of the compiled step function (Keras);
        more saves the per-call overhead of a small model, with the same updates.
    """
    if is_binary(model):
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        accuracy = keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy],
                  steps_per_execution=steps_per_execution)


def unfreeze_top(model: keras.Model, fine_tune_at: int) -> None:
    """Phase 2: the base trains from layer `fine_tune_at` on; the layers below stay frozen.

    Args:
      model: a model from build_model; changed in place (recompile it afterwards).
      fine_tune_at: the index of the first trainable layer of the base.
    """
    base = base_of(model)
    base.trainable = True
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False


def fine_tune_cut(model: keras.Model, fine_tune_at: int) -> keras.layers.Layer:
    """The base layer below `fine_tune_at` that carries everything the layers above need.

    Phase 2 leaves the base's first `fine_tune_at` layers frozen and in inference mode, so this
    output's value for an image never changes while the top trains. The cut is the latest
    layer below the unfrozen ones whose output is the only lower output that a higher layer
    reads (a residual block is never cut through). Frozen layers between it and
    `fine_tune_at` then run above the cut, still frozen.

    Args:
      model: a model from build_model.
      fine_tune_at: the index of the first trainable layer of the base.

    Returns:
      A layer of the base (its input layer at the lowest cut); its output is the cut.
    """
    layers = base_of(model).layers
    produced_by = {id(layer.output): i for i, layer in enumerate(layers)}
    consumers: list[list[int]] = [[] for _ in layers]  # producer -> indices of its consumers
    for i, layer in enumerate(layers[1:], 1):
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        for tensor in inputs:
            consumers[produced_by[id(tensor)]].append(i)
    for cut in range(min(fine_tune_at, len(layers) - 1), 0, -1):
        crossing = [p for p in range(cut) if any(c >= cut for c in consumers[p])]
        if len(crossing) == 1:
            return layers[crossing[0]]
    return layers[0]
