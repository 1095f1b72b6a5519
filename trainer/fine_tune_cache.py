"""Phase 2 on cached activations: the frozen bottom of the base runs once per image and view
(in phase 1's feature pass), then only the unfrozen top trains, epoch after epoch.

In phase 2 the base's layers below `fine_tune_at` are frozen and, like the whole base, in
inference mode, so their output for an image is the same in every epoch. Phase 1's feature
pass (trainer.feature_cache.extract_features) already runs the whole base over every image,
so it writes that output (at trainer.model.fine_tune_cut) too, and each phase-2 step runs
only the top of the base and the head: the same weights, the same update as a step over the
images without augmentation. The top model shares its layers with the full model, so what it
learns is the full model's, which is what is exported.

Augmentation becomes phase 1's fixed views (trainer.feature_cache.views): the image and, with
mirror_features, its mirror. Random rotation cannot survive: its output is a new image every
epoch. The activations are held in memory within trainer.data's cache budget and spilled to a
temporary file beyond it, from which the batches are read.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from trainer.config import TrainingConfig
from trainer.data import fits_in_budget
from trainer.model import (
    FEATURES_LAYER,
    HEAD_LAYERS,
    InferenceMode,
    base_of,
    fine_tune_cut,
)

FLOAT_BYTES = 4


@dataclass
class ActivationCache:
    """The base's activations at phase 2's cut for the training views and the eval images.

    The feature pass fills the arrays (view by view, as the features) and sets the labels (the
    model's targets: float32 [N, 1] for the binary head, else int64 [N]).
    """

    cut: str  # the base layer whose output is cached
    train: np.ndarray  # [training images x views, *cut shape]
    eval: np.ndarray  # [eval images, *cut shape]
    spill_dir: str | None  # the temporary folder of on-disk arrays, None when in memory
    train_labels: np.ndarray | None = None
    eval_labels: np.ndarray | None = None

    @classmethod
    def allocate(cls, model: keras.Model, cfg: TrainingConfig, train_rows: int,
                 eval_rows: int) -> ActivationCache:
        """An empty cache for the model's cut: in memory when both arrays fit the budget
        (trainer.data.fits_in_budget), else both in files of a new temporary folder.

        Args:
          model: a model from build_model.
          cfg: the knob used here: fine_tune_at.
          train_rows: training images x views.
          eval_rows: eval images.

        Returns:
          The cache, its arrays unfilled.
        """
        layer = fine_tune_cut(model, cfg.fine_tune_at)
        shape = tuple(layer.output.shape[1:])
        if fits_in_budget((train_rows + eval_rows) * math.prod(shape) * FLOAT_BYTES):
            return cls(layer.name, np.empty((train_rows, *shape), np.float32),
                       np.empty((eval_rows, *shape), np.float32), None)
        spill_dir = tempfile.mkdtemp(prefix="fine-tune-activations-")
        arrays = [np.lib.format.open_memmap(os.path.join(spill_dir, f"{name}.npy"), "w+",
                                            np.float32, (rows, *shape))
                  for name, rows in (("train", train_rows), ("eval", eval_rows))]
        return cls(layer.name, *arrays, spill_dir)

    @property
    def size_bytes(self) -> int:
        """The bytes of both arrays."""
        return self.train.nbytes + self.eval.nbytes

    def record(self) -> dict[str, object]:
        """What the history records of the cache: its cut, size and place."""
        return {"cut": self.cut, "cache_mb": round(self.size_bytes / 2**20, 1),
                "spilled": self.spill_dir is not None}

    def release(self) -> None:
        """Drops the arrays and deletes the spill folder, if any."""
        self.train = self.eval = np.empty((0,), np.float32)
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self.spill_dir = None


def top_model(model: keras.Model, fine_tune_at: int) -> keras.Model:
    """The model above phase 2's cut: activations at the cut -> logits.

    Its layers are the model's own (the base's top in inference mode, the pooling and the
    head), so training it trains the model.

    Args:
      model: a model from build_model, unfrozen for phase 2 (trainer.model.unfreeze_top).
      fine_tune_at: the index of the first trainable layer of the base.

    Returns:
      The uncompiled top model.
    """
    base = base_of(model)
    cut = fine_tune_cut(model, fine_tune_at).output
    inputs = keras.Input(cut.shape[1:], name="activations")
    x = InferenceMode(keras.Model(cut, base.output), name="base_top_inference_mode")(inputs)
    for name in (FEATURES_LAYER, *HEAD_LAYERS):
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name="fine_tuned_top")


def activation_batches(activations: np.ndarray, labels: np.ndarray, cfg: TrainingConfig,
                       training: bool) -> tf.data.Dataset:
    """Batches of (activations, labels) read from the arrays, reshuffled every pass when
    training.

    Only the indices go through tf.data: each batch is gathered from the arrays (from memory,
    or from the spill file), so no second copy of the cache is made.

    Args:
      activations: [N, ...] float32, in memory or memory-mapped.
      labels: [N, ...] targets.
      cfg: the knobs used here: batch_size and seed.
      training: shuffle every pass.

    Returns:
      The batched, prefetched dataset.
    """
    indices = tf.data.Dataset.range(len(labels))
    if training:
        indices = indices.shuffle(len(labels), seed=cfg.seed, reshuffle_each_iteration=True)

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.sort(batch)  # in file order: the spill file is read forward
        return activations[batch], labels[batch]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(gather, [batch], (tf.float32, tf.as_dtype(labels.dtype)))
        x.set_shape((None, *activations.shape[1:]))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return indices.batch(cfg.batch_size).map(load).prefetch(tf.data.AUTOTUNE)
