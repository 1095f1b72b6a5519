"""Phase 1 on cached features: the frozen base runs once per image and view, then the head
trains on those features until the eval loss stops improving.

With the base frozen and its BatchNormalization in inference mode, phase 1 of the tutorial
recipe computes the same base features every epoch; only the head changes. Computing them once turns
each head epoch into a small dense-layer pass, so the head can train to convergence in a
fraction of the time. Augmentation becomes a fixed set of views: the image and, with
mirror_features, its mirror. Each view costs one base pass per image, and neither the mirror
nor a few fixed rotations measured better on cats vs dogs, so by default only the image is.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from trainer.best_epoch import KeepBestEpoch
from trainer.config import TrainingConfig
from trainer.data import batched
from trainer.model import (
    FEATURES_LAYER,
    HEAD_LAYERS,
    WRAPPER_NAME,
    base_of,
    compile_model,
    fine_tune_cut,
    is_binary,
)

if TYPE_CHECKING:
    from trainer.fine_tune_cache import ActivationCache

# Cached features per evaluation step: a dense layer over them is cheap, the steps are not.
EVAL_BATCH = 4096


def views(cfg: TrainingConfig) -> list[str]:
    """The augmentation views whose features are cached for training.

    Args:
      cfg: the knob used here: mirror_features.

    Returns:
      ["original"], plus "mirrored" with mirror_features.
    """
    return ["original", "mirrored"] if cfg.mirror_features else ["original"]


def extract_features(model: keras.Model, examples: tf.data.Dataset, cfg: TrainingConfig,
                     view_names: list[str], activations: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model up to its pooled base features over every example, once per view.

    One full pass over `examples`, so a cached dataset (trainer.data.decoded_examples) is
    filled for the passes after it. With `activations`, the same pass also writes the base's
    activations at phase 2's cut (trainer.model.fine_tune_cut), which phase 2 then trains on
    (trainer.fine_tune_cache): no extra base pass.

    Args:
      model: a model from build_model (its augmentation layers are inactive here).
      examples: unbatched (float32 image, label) pairs, e.g. trainer.data.decoded_examples.
      cfg: the knobs used here: batch_size, and fine_tune_at with `activations`.
      view_names: from `views`; "mirrored" flips each image left to right.
      activations: an array (in memory or on disk) of [N x views, *cut shape] to fill, view
        by view as the features are; None: features only.

    Returns:
      (features float32 [N x views, D], labels int64 [N x views]), view by view.
    """
    wrapper = model.get_layer(WRAPPER_NAME)
    base = base_of(model)
    # The model's own layers: its preprocessing, the base (with the cut as a second output),
    # the pooling.
    inputs = keras.Input(model.input.shape[1:])
    x = keras.Model(model.input, wrapper.input)(inputs)
    if activations is None:
        outputs = model.get_layer(FEATURES_LAYER)(base(x, training=False))
    else:
        cut = fine_tune_cut(model, cfg.fine_tune_at).output
        base_out, cut_out = keras.Model(base.input, [base.output, cut])(x, training=False)
        outputs = [model.get_layer(FEATURES_LAYER)(base_out), cut_out]
    extractor = keras.Model(inputs, outputs)
    run = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    per_view: dict[str, list[np.ndarray]] = {name: [] for name in view_names}
    labels = []
    done = 0
    for images, batch_labels in batched(examples, cfg, training=False):
        labels.append(batch_labels.numpy())
        for v, name in enumerate(view_names):
            viewed = tf.image.flip_left_right(images) if name == "mirrored" else images
            if activations is None:
                per_view[name].append(run(viewed).numpy())
                continue
            pooled, cut_batch = run(viewed)
            per_view[name].append(pooled.numpy())
            start = v * (len(activations) // len(view_names)) + done
            activations[start:start + len(batch_labels)] = cut_batch.numpy()
        done += len(batch_labels)
    label_array = np.concatenate(labels)
    return (np.concatenate([np.concatenate(per_view[name]) for name in view_names]),
            np.tile(label_array, len(view_names)))


def train_head(model: keras.Model, train_examples: tf.data.Dataset,
               eval_examples: tf.data.Dataset, cfg: TrainingConfig,
               callbacks: list[keras.callbacks.Callback],
               activations: ActivationCache | None = None
               ) -> tuple[dict[str, Any], float]:
    """Phase 1: trains the model's head on cached base features, keeping its best eval epoch.

    The head model shares its layers with `model`, so training it trains the model's head.

    Args:
      model: a model from build_model, its base frozen; its head is trained in place.
      train_examples: unbatched (image, label) training pairs (trainer.data.decoded_examples).
      eval_examples: the evaluation pairs, likewise (the early-stopping split).
      cfg: the knobs used here: epochs (the most head epochs), patience, learning_rate,
        batch_size, mirror_features, and the input knobs.
      callbacks: more callbacks for the head's fit (e.g. TensorBoard).
      activations: filled by the same pass, for phase 2 (its arrays, then its labels).

    Returns:
      (the phase record's extra fields: views, examples, feature_seconds, the fit history and
      kept_epoch; the kept epoch's eval loss).
    """
    started = time.monotonic()
    view_names = views(cfg)
    x_train, y_train = extract_features(model, train_examples, cfg, view_names,
                                        activations.train if activations else None)
    x_eval, y_eval = extract_features(model, eval_examples, cfg, ["original"],
                                      activations.eval if activations else None)
    feature_seconds = time.monotonic() - started

    if is_binary(model):
        y_train, y_eval = (y.astype(np.float32)[:, None] for y in (y_train, y_eval))
    if activations is not None:
        activations.train_labels, activations.eval_labels = y_train, y_eval
    fit, kept_epoch, best_loss = fit_head(model, (x_train, y_train), (x_eval, y_eval), cfg,
                                          callbacks)
    record = {"views": view_names, "examples": len(y_train) // len(view_names),
              "feature_seconds": round(feature_seconds, 1), "fit": fit,
              "kept_epoch": kept_epoch}
    return record, best_loss


def fit_head(model: keras.Model, train: tuple[np.ndarray, np.ndarray],
             evaluation: tuple[np.ndarray, np.ndarray], cfg: TrainingConfig,
             callbacks: list[keras.callbacks.Callback]
             ) -> tuple[dict[str, list[float]], int, float]:
    """Trains the model's head on features until the eval loss stops improving, keeping the
    best epoch.

    Args:
      model: a model from build_model, its base frozen; its head is trained in place.
      train: (features [N, D], the model's targets) of the training views.
      evaluation: (features, targets) of the eval images.
      cfg: the knobs used here: epochs (the most), patience, learning_rate, batch_size, seed.
      callbacks: more callbacks for the fit (e.g. TensorBoard).

    Returns:
      (the fit's per-epoch metrics, the kept epoch, its eval loss).
    """
    features = keras.Input(train[0].shape[1:], name="features")
    head_out = features
    for name in HEAD_LAYERS:
        head_out = model.get_layer(name)(head_out)
    head = keras.Model(features, head_out, name="head")
    # A head step is a dense layer over a batch of features, so per-step overheads dominate:
    # one Keras call runs a whole epoch's steps (the same updates; measured 1.5x), and the
    # features are fed as tf.data rather than arrays (Keras re-slices arrays every epoch;
    # measured 2x).
    count = len(train[1])
    compile_model(head, keras.optimizers.Adam(cfg.learning_rate),
                  steps_per_execution=math.ceil(count / cfg.batch_size))
    batches = tf.data.Dataset.from_tensor_slices(train).shuffle(
        count, seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size)
    eval_batches = tf.data.Dataset.from_tensor_slices(evaluation).batch(EVAL_BATCH)
    keep = KeepBestEpoch(cfg.patience)
    fit = head.fit(batches.prefetch(tf.data.AUTOTUNE), epochs=cfg.epochs,
                   validation_data=eval_batches, callbacks=[*callbacks, keep], shuffle=False,
                   verbose=0)  # `batches` shuffles
    return fit.history, keep.best_epoch, keep.best_loss
