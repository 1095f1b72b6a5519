"""Best-epoch selection: the kept weights are those of the lowest eval loss, epoch 0 included."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.best_epoch import KeepBestEpoch


def drive(callback: KeepBestEpoch, model: keras.Model, losses: list[float]) -> list[float]:
    """Runs the callback over epochs whose eval losses are `losses`; each epoch sets the
    model's only weight to its epoch number. Returns the weight values seen at each epoch end."""
    callback.set_model(model)
    callback.on_train_begin()
    seen = []
    for epoch, loss in enumerate(losses):
        model.layers[-1].set_weights([np.full((1, 1), epoch + 1.0)])
        seen.append(epoch + 1.0)
        callback.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    callback.on_train_end()
    return seen


def tiny_model() -> keras.Model:
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    model.layers[-1].set_weights([np.zeros((1, 1))])
    model.stop_training = False
    return model


def weight(model: keras.Model) -> float:
    return float(model.layers[-1].get_weights()[0][0, 0])


def test_keeps_the_lowest_eval_loss_epoch_and_stops_after_patience():
    model, keep = tiny_model(), KeepBestEpoch(patience=2)
    seen = drive(keep, model, [0.9, 0.5, 0.6, 0.7, 0.1])
    assert seen == [1, 2, 3, 4]  # epochs 3 and 4 did not improve on epoch 2: stop
    assert (keep.best_epoch, keep.best_loss, weight(model)) == (2, 0.5, 2.0)


def test_the_starting_weights_win_when_no_epoch_beats_them():
    model, keep = tiny_model(), KeepBestEpoch(patience=3, start_loss=0.4)
    drive(keep, model, [0.5, 0.45, 0.41])
    assert (keep.best_epoch, weight(model)) == (0, 0.0)


def test_the_last_epoch_is_kept_when_it_is_the_best():
    model, keep = tiny_model(), KeepBestEpoch(patience=1, start_loss=0.4)
    drive(keep, model, [0.3, 0.2])
    assert (keep.best_epoch, weight(model)) == (2, 2.0)


def test_needs_the_eval_loss_and_a_positive_patience():
    with pytest.raises(ValueError, match="patience"):
        KeepBestEpoch(patience=0)
    keep = KeepBestEpoch(patience=1)
    keep.set_model(tiny_model())
    with pytest.raises(ValueError, match="val_loss"):
        keep.on_epoch_end(0, {"loss": 1.0})
