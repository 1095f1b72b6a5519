"""Phase 1 on cached features (trainer.feature_cache) and the history the Trainer records."""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import trainer.data
from contract.artifacts import HISTORY_FILE
from contract.features import IMAGE_KEY, LABEL_KEY
from contract.interface import IMAGES_INPUT, PROBABILITIES, SERVING_SIGNATURE
from tests.conftest import SMALL_ALPHA, SMALL_IMAGE_SIZE, SMALL_WEIGHTS, training_config
from trainer.data import batched, binary_labels, decoded_examples, input_fn
from trainer.feature_cache import extract_features, train_head, views
from trainer.fine_tune_cache import ActivationCache, activation_batches, top_model
from trainer.model import (
    FEATURES_LAYER,
    base_of,
    build_model,
    compile_model,
    fine_tune_cut,
    unfreeze_top,
)
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


def test_the_cut_is_the_one_lower_output_the_top_reads():
    model = build_model(2, CONFIG)
    layers = base_of(model).layers
    for fine_tune_at in (1, 60, 100, 107, 130):
        cut = fine_tune_cut(model, fine_tune_at)
        index = layers.index(cut)
        assert index < fine_tune_at
        above = [layer for layer in layers[index + 1:]]
        below = {id(layer.output) for layer in layers[:index + 1]}
        read = {id(t) for layer in above
                for t in (layer.input if isinstance(layer.input, list) else [layer.input])}
        assert read & below == {id(cut.output)}
    # Layer 100 is inside block 11, whose residual add reads block 10's output: cut there.
    assert fine_tune_cut(model, 100).name == "block_10_project_BN"


# No augmentation and no dropout: the two phase-2 paths then see the same inputs.
PLAIN = dataclasses.replace(CONFIG, horizontal_flip=False, rotation=0.0, dropout=0.0,
                            mirror_features=False, fine_tune_at=100)


def _filled_cache(model, examples, cfg):
    n = int(examples.cardinality())
    cache = ActivationCache.allocate(model, cfg, n, n)
    _, labels = extract_features(model, examples, cfg, ["original"], cache.train)
    extract_features(model, examples, cfg, ["original"], cache.eval)
    return cache, labels


def test_a_step_on_cached_activations_is_the_end_to_end_step(mini_tfrecords):
    """The same gradients and the same RMSprop update as phase 2 over the images."""
    keras.utils.set_random_seed(5)
    model = build_model(2, PLAIN)
    examples = decoded_examples(split(mini_tfrecords, "eval"), PLAIN).take(8)
    cache, labels = _filled_cache(model, examples, PLAIN)
    images = np.concatenate([x.numpy() for x, _ in batched(examples, PLAIN, training=False)])
    targets = labels.astype(np.float32)[:, None]
    unfreeze_top(model, PLAIN.fine_tune_at)
    top = top_model(model, PLAIN.fine_tune_at)
    assert [id(w) for w in top.trainable_weights] == [id(w) for w in model.trainable_weights]
    start = model.get_weights()

    def gradients(m, x):
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, m(x, training=True))
        return loss, tape.gradient(loss, m.trainable_weights)

    loss_full, grads_full = gradients(model, images)
    loss_top, grads_top = gradients(top, cache.train)
    assert float(loss_top) == pytest.approx(float(loss_full), abs=1e-5)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads_full)
    for g_full, g_top in zip(grads_full, grads_top, strict=True):
        np.testing.assert_allclose(g_top, g_full, rtol=1e-3, atol=1e-5)

    updated = {}
    for name, m, x in (("full", model, images), ("top", top, cache.train)):
        model.set_weights(start)
        compile_model(m, keras.optimizers.RMSprop(1e-3))
        m.train_on_batch(x, targets)
        updated[name] = model.get_weights()
    changed = 0
    for w_start, w_full, w_top in zip(start, updated["full"], updated["top"], strict=True):
        np.testing.assert_allclose(w_top, w_full, rtol=1e-3, atol=1e-6)
        changed += not np.array_equal(w_full, w_start)
    assert changed == len(model.trainable_weights)  # every trainable weight moved, and only they


def test_activations_beyond_the_budget_spill_to_disk_and_read_back_the_same(mini_tfrecords,
                                                                            monkeypatch):
    model = build_model(2, PLAIN)
    examples = decoded_examples(split(mini_tfrecords, "eval"), PLAIN)
    in_memory, labels = _filled_cache(model, examples, PLAIN)
    assert in_memory.spill_dir is None
    monkeypatch.setattr(trainer.data, "CACHE_BUDGET_BYTES", in_memory.size_bytes - 1)
    spilled, _ = _filled_cache(model, examples, PLAIN)
    spill_dir = spilled.spill_dir
    assert spill_dir and isinstance(spilled.train, np.memmap)
    assert spilled.record()["spilled"] and spilled.record()["cut"] == "block_10_project_BN"
    np.testing.assert_array_equal(np.asarray(spilled.train), in_memory.train)
    # Every example comes back once per pass, shuffled, with its own label.
    batches = list(activation_batches(spilled.train, labels, PLAIN, training=True))
    read = np.concatenate([x.numpy() for x, _ in batches])
    read_labels = np.concatenate([y.numpy() for _, y in batches])
    order = [int(np.flatnonzero((in_memory.train == row).all(axis=(1, 2, 3)))[0]) for row in read]
    assert sorted(order) == list(range(len(labels))) and order != sorted(order)
    np.testing.assert_array_equal(read_labels, labels[order])
    spilled.release()
    assert not os.path.exists(spill_dir)


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
    assert phase2["cut"] == "block_13_pad" and not phase2["spilled"]
    # Phase 2 competed with phase 1's kept weights: what was kept is the best of both phases.
    best = min(phase1["history"]["val_loss"] + phase2["history"]["val_loss"])
    kept = (phase2["history"]["val_loss"][phase2["kept_epoch"] - 1] if phase2["kept_epoch"]
            else phase1["history"]["val_loss"][phase1["kept_epoch"] - 1])
    assert kept == pytest.approx(best)
    # The export is the full model with the kept weights: over the eval photos' JPEG bytes it
    # scores the eval loss the kept epoch scored on cached features or activations.
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures[SERVING_SIGNATURE]
    records = [tf.io.parse_single_example(r, trainer.data.feature_spec(IMAGE_KEY, LABEL_KEY))
               for r in trainer.data.record_dataset(split(mini_tfrecords, "eval"))]
    p_dog = serve(**{IMAGES_INPUT: tf.stack([r[IMAGE_KEY] for r in records])})[PROBABILITIES]
    labels = np.array([int(r[LABEL_KEY]) for r in records])
    p_true = np.where(labels == 1, p_dog[:, 1], p_dog[:, 0])
    assert float(-np.mean(np.log(p_true))) == pytest.approx(kept, abs=1e-3)


@pytest.mark.slow
def test_the_seed_recipe_runs_every_epoch_and_keeps_the_last(mini_tfrecords, tmp_path):
    cfg = dataclasses.replace(CONFIG, cache_features=False, patience=0, epochs=2,
                              fine_tune_epochs=0)
    history = train_and_export(split(mini_tfrecords, "train"), split(mini_tfrecords, "eval"),
                               ["cats", "dogs"], cfg, str(tmp_path / "export"),
                               str(tmp_path / "logs"))
    assert "phase2" not in history and "views" not in history["phase1"]
    assert len(history["phase1"]["history"]["loss"]) == 2 and history["phase1"]["kept_epoch"] == 2
