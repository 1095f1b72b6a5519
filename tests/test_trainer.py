"""Trainer: model structure per phase, input_fn, weights handling (export: test_export.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ALPHA, WEIGHTS, training_config, validation_photos
from trainer.data import input_fn
from trainer.images import decode_and_resize, decode_batch
from trainer.model import (
    BASE_NAME,
    NO_WEIGHTS,
    WeightsError,
    base_of,
    build_base,
    build_model,
    unfreeze_top,
)

SIZE = 96  # small and fast; any size >= 32 works with the no-top weights
CONFIG = training_config(image_size=SIZE, alpha=ALPHA, base_weights=str(WEIGHTS), batch_size=32)
EVAL_CONFIG = dataclasses.replace(CONFIG, batch_size=8)


@pytest.fixture(scope="module")
def binary_model():
    return build_model(2, dataclasses.replace(CONFIG, seed=1))


def trainable_layer_names(model) -> set[str]:
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_phase1_trains_only_the_head(binary_model):
    base = base_of(binary_model)
    assert not base.trainable
    assert binary_model.output_shape == (None, 1)
    assert [w.path for w in binary_model.trainable_weights] == ["logits/kernel", "logits/bias"]
    assert {layer.name for layer in binary_model.layers} >= {
        "augment_flip", "augment_rotation", "rescale", "pool", "dropout", "logits"}


def test_phase2_unfreezes_from_fine_tune_at():
    model = build_model(2, CONFIG)
    before = len(model.trainable_weights)
    unfreeze_top(model, 100)
    base = base_of(model)
    assert base.trainable
    assert all(not layer.trainable for layer in base.layers[:100])
    assert all(layer.trainable for layer in base.layers[100:])
    expected = sum(len(layer.trainable_weights) for layer in base.layers[100:]) + before
    assert len(model.trainable_weights) == expected > before
    # BatchNormalization stays in inference mode: a forward pass in training mode does not
    # change the moving statistics of an unfrozen BN layer.
    bn = next(layer for layer in base.layers[100:]
              if isinstance(layer, keras.layers.BatchNormalization))
    mean_before = keras.ops.convert_to_numpy(bn.moving_mean)
    model(np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32"),
          training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), mean_before)


def test_multiclass_head_is_softmax_sized():
    model = build_model(5, dataclasses.replace(CONFIG, base_weights=NO_WEIGHTS))
    assert model.output_shape == (None, 5)


def test_pretrained_weights_are_loaded_from_the_local_file():
    pretrained = build_base(SIZE, ALPHA, str(WEIGHTS))
    random_init = build_base(SIZE, ALPHA, NO_WEIGHTS)
    gamma = {w.path: np.array(w) for w in pretrained.weights if "Conv_1_bn/gamma" in w.path}
    assert gamma and all(abs(v.mean() - 1.0) > 0.5 for v in gamma.values())  # trained, not 1s
    assert len(pretrained.weights) == len(random_init.weights)


def test_bad_weights_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_base(SIZE, ALPHA, str(tmp_path / "missing.h5"))
    with pytest.raises(WeightsError, match="--alpha"):
        build_base(SIZE, 1.0, str(WEIGHTS))  # file is alpha 0.5


def test_input_fn_batches(mini_tfrecords):
    ds = input_fn(f"{mini_tfrecords.output_dir}/train/*", CONFIG, training=True)
    batches = list(ds)
    assert [int(x.shape[0]) for x, _ in batches] == [32, 32, 16]
    assert int(ds.cardinality()) == 3  # known, so Keras counts the first epoch's steps
    images, labels = batches[0]
    assert images.dtype == tf.float32 and images.shape[1:] == (SIZE, SIZE, 3)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
    all_labels = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(np.bincount(all_labels)) == [40, 40]
    # Reshuffled each epoch; the eval input is in file order every time.
    second = np.concatenate([y.numpy() for _, y in ds])
    assert not np.array_equal(all_labels, second)
    eval_ds = input_fn(f"{mini_tfrecords.output_dir}/eval/*", EVAL_CONFIG, training=False)
    first_pass = np.concatenate([y.numpy() for _, y in eval_ds])
    np.testing.assert_array_equal(first_pass, np.concatenate([y.numpy() for _, y in eval_ds]))


def test_decoding_is_shared_and_handles_formats():
    jpeg = validation_photos()[0][0].read_bytes()
    single = decode_and_resize(tf.constant(jpeg), SIZE)
    batch = decode_batch(tf.constant([jpeg, jpeg]), SIZE)
    assert batch.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch[0], single)
    png = tf.io.encode_png(tf.cast(tf.round(single), tf.uint8)).numpy()
    assert decode_and_resize(tf.constant(png), SIZE).shape == (SIZE, SIZE, 3)


def test_model_config_round_trips(binary_model):
    clone = keras.models.clone_model(binary_model)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in binary_model.layers]
    assert base_of(clone).name == BASE_NAME


def test_decoded_images_are_cached_only_within_the_budget(mini_tfrecords, monkeypatch):
    import trainer.data

    files = f"{mini_tfrecords.output_dir}/train/*"  # 80 examples
    per_image = SIZE * SIZE * 3 * 4
    assert trainer.data.count_records(files) == 80
    monkeypatch.setattr(trainer.data, "CACHE_BUDGET_BYTES", 80 * per_image)
    assert trainer.data.fits_in_cache(80, SIZE)
    monkeypatch.setattr(trainer.data, "CACHE_BUDGET_BYTES", 79 * per_image)
    assert not trainer.data.fits_in_cache(80, SIZE)
    # Either way the batches are the same.
    uncached = [y.numpy() for _, y in input_fn(files, EVAL_CONFIG, training=False)]
    monkeypatch.setattr(trainer.data, "CACHE_BUDGET_BYTES", 80 * per_image)
    cached = [y.numpy() for _, y in input_fn(files, EVAL_CONFIG, training=False)]
    np.testing.assert_array_equal(np.concatenate(uncached), np.concatenate(cached))


def test_base_weights_from_a_gfile_uri_are_copied_locally(tmp_path):
    from trainer.model import local_weights_file

    uri = f"ram://weights-{tmp_path.name}/{WEIGHTS.name}"  # TF's in-memory file system
    tf.io.gfile.makedirs(os.path.dirname(uri))
    tf.io.gfile.copy(str(WEIGHTS), uri)
    local = local_weights_file(uri)
    assert "://" not in local and os.path.basename(local) == WEIGHTS.name
    assert Path(local).read_bytes() == WEIGHTS.read_bytes()
    assert local_weights_file(uri) == local  # copied once
    assert local_weights_file(str(WEIGHTS)) == str(WEIGHTS)  # local paths as they are
    with pytest.raises(WeightsError, match="does not exist"):
        local_weights_file(f"ram://weights-{tmp_path.name}/missing.h5")
