"""The Trainer's `run_fn`: phase 1 (the head), phase 2 (fine-tune), history, export."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import keras
import tensorflow as tf

from contract.artifacts import HISTORY_FILE
from contract.interface import MODEL_NAME
from trainer.best_epoch import KeepBestEpoch
from trainer.config import TrainingConfig
from trainer.data import batched, binary_labels, decoded_examples
from trainer.export import export_model
from trainer.feature_cache import train_head, views
from trainer.fine_tune_cache import ActivationCache, activation_batches, top_model
from trainer.model import build_model, compile_model, is_binary, unfreeze_top
from trainer.tflite_export import CALIBRATION_IMAGES, tflite_model_dir, write_tflite_models
from trainer.warmup import read_encoded_images, write_warmup_requests

LOG = logging.getLogger("trainer")
CONFIG_KEY = "training"
CLASSES_KEY = "classes"
MODEL_NAME_KEY = "model_name"


def train_and_export(train_files: list[str] | str, eval_files: list[str] | str,
                     class_names: list[str], cfg: TrainingConfig, export_dir: str,
                     log_dir: str, model_name: str = MODEL_NAME,
                     tflite_dir: str | None = None) -> dict[str, Any]:
    """Trains the head (phase 1) and fine-tunes the top of the base (phase 2), writes
    history.json and TensorBoard logs to log_dir, exports the SavedModel to export_dir (and,
    with cfg.on_device, the TFLite models to tflite_dir), and returns the history.

    With cfg.cache_features, phase 1 trains the head on base features computed once, and the
    same pass caches the base's activations below cfg.fine_tune_at, on which phase 2 trains the
    base's top (trainer.fine_tune_cache): the views of phase 1, no random augmentation.
    Without it, as the tutorial recipe does, both phases train end to end over the images. With
    cfg.patience, each phase stops once the eval loss has not improved for that many epochs
    and keeps its best epoch; phase 2 keeps phase 1's weights when no fine-tuning epoch beats
    them.

    Args:
      train_files: training TFRecord files of tf.Examples: a glob pattern or a list of them.
      eval_files: evaluation TFRecord files, likewise.
      class_names: the class names by index.
      cfg: the model, training and export knobs.
      export_dir: where the SavedModel (with its warmup file) is written.
      log_dir: where history.json and the TensorBoard logs are written.
      model_name: the model name the warmup requests carry (TF Serving ignores it on replay).
      tflite_dir: where the on-device models and their labels are written when cfg.on_device
        (trainer.tflite_export); None writes none.

    Returns:
      {"classes", "config", "phase1", "phase2"}; phase2 only when fine_tune_epochs > 0. Each
      phase holds "history" (per-epoch metrics), "seconds", "trainable_weights" and
      "kept_epoch": the 1-based epoch of that phase whose weights were kept (0 in phase 2:
      no fine-tuning epoch beat phase 1, whose weights were kept). On cached activations,
      phase2 also holds "cut" (the base layer whose output was cached), "cache_mb" and
      "spilled" (held in a temporary file rather than in memory).
    """
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(len(class_names), cfg)
    # Decoded once. On cached features, phase 1's one pass over the images also caches what
    # phase 2 reads (the activations at its cut), so the decoded images are not kept; else that
    # pass fills the in-memory image cache (when the images fit) that phase 2's epochs read.
    keep_images = not cfg.cache_features
    train_examples = decoded_examples(train_files, cfg, cache=keep_images)
    eval_examples = decoded_examples(eval_files, cfg, cache=keep_images)
    tensorboard = keras.callbacks.TensorBoard(os.path.join(log_dir, "tensorboard"))
    history: dict[str, Any] = {"classes": class_names,
                               "config": {**cfg.to_dict(), "model_name": model_name}}
    activations = None
    if cfg.cache_features and cfg.fine_tune_epochs > 0:
        activations = ActivationCache.allocate(
            model, cfg, len(views(cfg)) * int(train_examples.cardinality()),
            int(eval_examples.cardinality()))
    try:
        _train(model, train_examples, eval_examples, cfg, activations, history, [tensorboard])
    finally:
        if activations is not None:
            activations.release()

    export_model(model, class_names, cfg.image_size, export_dir)
    # TF Serving (and the serving check before the push) replay these before a version answers.
    write_warmup_requests(export_dir, read_encoded_images(train_files), model_name)
    if cfg.on_device and tflite_dir:
        started = time.monotonic()
        calibration = read_encoded_images(train_files, CALIBRATION_IMAGES, sample_seed=cfg.seed)
        written = write_tflite_models(model, class_names, cfg.image_size, calibration,
                                      tflite_dir)
        history["on_device"] = {"seconds": round(time.monotonic() - started, 1),
                                "calibration_images": len(calibration),
                                "bytes": {form: tf.io.gfile.stat(path).length
                                          for form, path in written.items()}}
    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(os.path.join(log_dir, HISTORY_FILE), "w") as f:
        json.dump(history, f, indent=1)
    return history


def _train(model: keras.Model, train_examples: tf.data.Dataset, eval_examples: tf.data.Dataset,
           cfg: TrainingConfig, activations: ActivationCache | None, history: dict[str, Any],
           callbacks: list[keras.callbacks.Callback]) -> None:
    """Phase 1, then phase 2 (over `activations` when given, else over the images); each
    phase's record goes into `history`."""
    started = time.monotonic()
    if cfg.cache_features:
        LOG.info("phase 1: head on cached base features, Adam %.2g, up to %d epochs",
                 cfg.learning_rate, cfg.epochs)
        extra, best_loss = train_head(model, train_examples, eval_examples, cfg, callbacks,
                                      activations)
        metrics, kept = extra.pop("fit"), extra.pop("kept_epoch")
    else:
        LOG.info("phase 1: frozen base, Adam %.2g, %d epochs", cfg.learning_rate, cfg.epochs)
        train_ds, eval_ds = _image_batches(model, train_examples, eval_examples, cfg)
        metrics, kept, best_loss = _fit(model, keras.optimizers.Adam(cfg.learning_rate),
                                        train_ds, eval_ds, cfg, cfg.epochs, 0, None, callbacks)
        extra = {}
    history["phase1"] = {**_phase_record(metrics, model, time.monotonic() - started, kept),
                         **extra}
    if cfg.fine_tune_epochs <= 0:
        return
    unfreeze_top(model, cfg.fine_tune_at)
    rate = cfg.learning_rate * cfg.fine_tune_lr_factor
    started = time.monotonic()
    if activations is not None:
        LOG.info("phase 2: base layers %d+ trainable on activations cached at %s, RMSprop "
                 "%.2g, up to %d epochs", cfg.fine_tune_at, activations.cut, rate,
                 cfg.fine_tune_epochs)
        trained = top_model(model, cfg.fine_tune_at)
        train_ds = activation_batches(activations.train, activations.train_labels, cfg, True)
        eval_ds = activation_batches(activations.eval, activations.eval_labels, cfg, False)
        extra = activations.record()
    else:
        LOG.info("phase 2: base layers %d+ trainable, RMSprop %.2g, up to %d epochs",
                 cfg.fine_tune_at, rate, cfg.fine_tune_epochs)
        trained = model
        train_ds, eval_ds = _image_batches(model, train_examples, eval_examples, cfg)
        extra = {}
    first_epoch = len(metrics["loss"])
    metrics, kept, _ = _fit(trained, keras.optimizers.RMSprop(rate), train_ds, eval_ds, cfg,
                            cfg.fine_tune_epochs, first_epoch, best_loss, callbacks)
    history["phase2"] = {**_phase_record(metrics, model, time.monotonic() - started, kept),
                         **extra}


def _image_batches(model: keras.Model, train_examples: tf.data.Dataset,
                   eval_examples: tf.data.Dataset, cfg: TrainingConfig
                   ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training and eval batches of images, with the model's targets."""
    train_ds = batched(train_examples, cfg, training=True)
    eval_ds = batched(eval_examples, cfg, training=False)
    if is_binary(model):
        return binary_labels(train_ds), binary_labels(eval_ds)
    return train_ds, eval_ds


def _fit(model: keras.Model, optimizer: keras.optimizers.Optimizer, train_ds: tf.data.Dataset,
         eval_ds: tf.data.Dataset, cfg: TrainingConfig, epochs: int, first_epoch: int,
         start_loss: float | None, callbacks: list[keras.callbacks.Callback]
         ) -> tuple[dict[str, list[float]], int, float | None]:
    """One phase over the images: (per-epoch metrics, kept epoch, its eval loss).

    Without cfg.patience (the tutorial recipe) every epoch runs and the last is kept; start_loss
    is the eval loss of the weights the phase starts from, which then compete as epoch 0.
    """
    compile_model(model, optimizer)
    keep = KeepBestEpoch(cfg.patience, start_loss) if cfg.patience else None
    fit = model.fit(train_ds, validation_data=eval_ds, epochs=first_epoch + epochs,
                    initial_epoch=first_epoch, callbacks=[*callbacks, *filter(None, [keep])],
                    shuffle=False, verbose=2)  # the dataset reshuffles itself every epoch
    if keep is not None:
        return fit.history, keep.best_epoch, keep.best_loss
    return fit.history, len(fit.history["loss"]), fit.history["val_loss"][-1]


def _phase_record(metrics: dict[str, list[float]], model: keras.Model, seconds: float,
                  kept_epoch: int) -> dict[str, Any]:
    return {"history": {k: [float(v) for v in vs] for k, vs in metrics.items()},
            "kept_epoch": kept_epoch,
            "trainable_weights": len(model.trainable_weights),
            "seconds": round(seconds, 1)}


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (GenericExecutor).

    Args:
      fn_args: the Trainer's FnArgs; custom_config holds "training" (the TrainingConfig's
        knobs), "classes" (the class names by index) and "model_name" (that of the serving
        dir).
    """
    custom = fn_args.custom_config or {}
    cfg = TrainingConfig.from_dict(custom[CONFIG_KEY])
    train_and_export(fn_args.train_files, fn_args.eval_files, list(custom[CLASSES_KEY]), cfg,
                     fn_args.serving_model_dir, fn_args.model_run_dir,
                     custom[MODEL_NAME_KEY], tflite_model_dir(fn_args.serving_model_dir))
