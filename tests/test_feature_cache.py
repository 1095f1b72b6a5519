"""Phase 1 on cached features (trainer.feature_cache) and the history the Trainer records."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract.artifacts import HISTORY_FILE
from tests.conftest import SMALL_ALPHA, SMALL_IMAGE_SIZE, SMALL_WEIGHTS, training_config
from trainer.data import batched, binary_labels, decoded_examples, input_fn
from trainer.feature_cache import extract_features, train_head, views
from trainer.model import FEATURES_LAYER, build_model, compile_model
from trainer.task import train_and_export

CONFIG = training_config(image_size=SMALL_IMAGE_SIZE, alpha=SMALL_ALPHA,
                         base_weights=str(SMALL_WEIGHTS), batch_size=16, epochs=40, patience=3,
                         learning_rate=1e-2, mirror_features=True)


def split(tfrecords, name: str) -> str:
    return f"{tfrecords.output_dir}/{name}/*"


def test_views_follow_the_mirror_knob():
    assert views(CONFIG) == ["original", "mirrored"]
    assert views(dataclasses.replace(CONFIG, mirror_features=False)) == ["original"]


def test_cached_features_are_the_models_own_for_each_view(mini_tfrecords):
    model = build_model(2, CONFIG)
    features, labels = extract_features(model, decoded_examples(split(mini_tfrecords, "eval"),
                                                                CONFIG),
                                        CONFIG, ["original", "mirrored"])
    pooled = keras.Model(model.input, model.get_layer(FEATURES_LAYER).output)
    images = np.concatenate([x.numpy() for x, _ in input_fn(split(mini_tfrecords, "eval"),
                                                            CONFIG, training=False)])
    n = len(images)
    assert features.shape == (2 * n, pooled.output_shape[-1])
    np.testing.assert_array_equal(labels[:n], labels[n:])
    np.testing.assert_allclose(features[:n], pooled.predict(images, verbose=0), atol=1e-4)
    np.testing.assert_allclose(features[n:], pooled.predict(images[:, :, ::-1], verbose=0),
                               atol=1e-4)
    assert not np.allclose(features[:n], features[n:], atol=1e-3)  # the mirror is another view


def test_the_head_trained_on_features_is_the_models_head(mini_tfrecords):
    keras.utils.set_random_seed(3)
    model = build_model(2, CONFIG)
    before = model.get_layer("logits").get_weights()[0].copy()
    record, best_loss = train_head(model, decoded_examples(split(mini_tfrecords, "train"), CONFIG),
                                   decoded_examples(split(mini_tfrecords, "eval"), CONFIG),
                                   CONFIG, [])
    epochs_run = len(record["fit"]["loss"])
    assert record["views"] == ["original", "mirrored"] and record["examples"] == 80
    assert 1 <= record["kept_epoch"] <= epochs_run <= CONFIG.epochs
    assert epochs_run == CONFIG.epochs or epochs_run == record["kept_epoch"] + CONFIG.patience
    assert best_loss == pytest.approx(min(record["fit"]["val_loss"]))
    assert not np.array_equal(model.get_layer("logits").get_weights()[0], before)
    # The full model over the eval images scores what the kept head epoch scored on features.
    compile_model(model, keras.optimizers.Adam())
    eval_ds = binary_labels(input_fn(split(mini_tfrecords, "eval"), CONFIG, training=False))
    loss, _ = model.evaluate(eval_ds, verbose=0)
    assert loss == pytest.approx(best_loss, abs=1e-4)


def test_the_feature_pass_fills_the_image_cache_phase_2_reads(mini_tfrecords, tmp_path):
    copy = tmp_path / "eval"
    copy.mkdir()
    for path in tf.io.gfile.glob(split(mini_tfrecords, "eval")):
        tf.io.gfile.copy(path, str(copy / path.rsplit("/", 1)[-1]))
    examples = decoded_examples(f"{copy}/*", CONFIG)
    _, labels = extract_features(build_model(2, CONFIG), examples, CONFIG, ["original"])
    for path in copy.iterdir():
        path.unlink()
    # Phase 2's shuffled batches come from memory: the files are gone, every example is there.
    reread = np.concatenate([y.numpy() for _, y in batched(examples, CONFIG, training=True)])
    assert len(labels) > 0 and sorted(reread) == sorted(labels)


@pytest.mark.slow
def test_train_and_export_records_the_kept_epochs(mini_tfrecords, tmp_path):
    cfg = dataclasses.replace(CONFIG, fine_tune_epochs=2, fine_tune_at=120,
                              fine_tune_lr_factor=0.01)
    history = train_and_export(split(mini_tfrecords, "train"), split(mini_tfrecords, "eval"),
                               ["cats", "dogs"], cfg, str(tmp_path / "export"),
                               str(tmp_path / "logs"))
    assert json.loads((tmp_path / "logs" / HISTORY_FILE).read_text()) == history
    phase1, phase2 = history["phase1"], history["phase2"]
    assert phase1["feature_seconds"] > 0 and phase1["views"] == ["original", "mirrored"]
    assert 1 <= phase1["kept_epoch"] <= len(phase1["history"]["loss"])
    assert len(phase2["history"]["loss"]) <= 2 and 0 <= phase2["kept_epoch"] <= 2
    assert (tmp_path / "export" / "saved_model.pb").exists()
    # Phase 2 competed with phase 1's kept weights: what was kept is the best of both phases.
    best = min(phase1["history"]["val_loss"] + phase2["history"]["val_loss"])
    kept = (phase2["history"]["val_loss"][phase2["kept_epoch"] - 1] if phase2["kept_epoch"]
            else phase1["history"]["val_loss"][phase1["kept_epoch"] - 1])
    assert kept == pytest.approx(best)


@pytest.mark.slow
def test_the_seed_recipe_runs_every_epoch_and_keeps_the_last(mini_tfrecords, tmp_path):
    cfg = dataclasses.replace(CONFIG, cache_features=False, patience=0, epochs=2,
                              fine_tune_epochs=0)
    history = train_and_export(split(mini_tfrecords, "train"), split(mini_tfrecords, "eval"),
                               ["cats", "dogs"], cfg, str(tmp_path / "export"),
                               str(tmp_path / "logs"))
    assert "phase2" not in history and "views" not in history["phase1"]
    assert len(history["phase1"]["history"]["loss"]) == 2 and history["phase1"]["kept_epoch"] == 2
