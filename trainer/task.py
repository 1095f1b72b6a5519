"""The Trainer's `run_fn`: phase 1 (frozen base), phase 2 (fine-tune), history, export."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import keras
import tensorflow as tf

from contract.artifacts import HISTORY_FILE
from trainer.config import TrainingConfig
from trainer.data import input_fn
from trainer.export import export_model
from trainer.model import build_model, compile_model, is_binary, unfreeze_top
from trainer.warmup import read_encoded_images, write_warmup_requests

LOG = logging.getLogger("trainer")
CONFIG_KEY = "training"
CLASSES_KEY = "classes"


def _binary_labels(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda x, y: (x, tf.cast(y, tf.float32)[:, None]))


def train_and_export(train_files: list[str] | str, eval_files: list[str] | str,
                     class_names: list[str], cfg: TrainingConfig, export_dir: str,
                     log_dir: str) -> dict[str, Any]:
    """Runs both phases of the tutorial recipe, writes history.json and TensorBoard logs to log_dir,
    exports the SavedModel to export_dir, and returns the history.

    Args:
      train_files: training TFRecord files of tf.Examples: a glob pattern or a list of them.
      eval_files: evaluation TFRecord files, likewise.
      class_names: the class names by index.
      cfg: the model, training and export knobs.
      export_dir: where the SavedModel (with its warmup file) is written.
      log_dir: where history.json and the TensorBoard logs are written.

    Returns:
      {"classes", "config", "phase1", "phase2"}; phase2 only when fine_tune_epochs > 0.
    """
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(len(class_names), cfg)
    train_ds = input_fn(train_files, cfg, training=True)
    eval_ds = input_fn(eval_files, cfg, training=False)
    if is_binary(model):
        train_ds, eval_ds = _binary_labels(train_ds), _binary_labels(eval_ds)
    tensorboard = keras.callbacks.TensorBoard(os.path.join(log_dir, "tensorboard"))
    history: dict[str, Any] = {"classes": class_names, "config": cfg.to_dict()}

    LOG.info("phase 1: frozen base, Adam %.2g, %d epochs", cfg.learning_rate, cfg.epochs)
    compile_model(model, keras.optimizers.Adam(cfg.learning_rate))
    started = time.monotonic()
    h1 = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs,
                   callbacks=[tensorboard], verbose=2)
    history["phase1"] = _phase_record(h1.history, model, time.monotonic() - started)

    if cfg.fine_tune_epochs > 0:
        unfreeze_top(model, cfg.fine_tune_at)
        rate = cfg.learning_rate * cfg.fine_tune_lr_factor
        LOG.info("phase 2: base layers %d+ trainable, RMSprop %.2g, %d epochs",
                 cfg.fine_tune_at, rate, cfg.fine_tune_epochs)
        compile_model(model, keras.optimizers.RMSprop(rate))
        started = time.monotonic()
        h2 = model.fit(train_ds, validation_data=eval_ds,
                       epochs=cfg.epochs + cfg.fine_tune_epochs, initial_epoch=cfg.epochs,
                       callbacks=[tensorboard], verbose=2)
        history["phase2"] = _phase_record(h2.history, model, time.monotonic() - started)

    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(os.path.join(log_dir, HISTORY_FILE), "w") as f:
        json.dump(history, f, indent=1)
    export_model(model, class_names, cfg.image_size, export_dir)
    # TF Serving (and the serving check before the push) replay these before a version answers.
    write_warmup_requests(export_dir, read_encoded_images(train_files), cfg.model_name)
    return history


def _phase_record(metrics: dict[str, list[float]], model: keras.Model,
                  seconds: float) -> dict[str, Any]:
    return {"history": {k: [float(v) for v in vs] for k, vs in metrics.items()},
            "trainable_weights": len(model.trainable_weights),
            "seconds": round(seconds, 1)}


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (GenericExecutor).

    Args:
      fn_args: the Trainer's FnArgs; custom_config holds "training" (the TrainingConfig's
        knobs) and "classes" (the class names by index).
    """
    custom = fn_args.custom_config or {}
    cfg = TrainingConfig.from_dict(custom[CONFIG_KEY])
    train_and_export(fn_args.train_files, fn_args.eval_files, list(custom[CLASSES_KEY]), cfg,
                     fn_args.serving_model_dir, fn_args.model_run_dir)
