"""Best-epoch selection: keep the weights of the epoch with the lowest eval loss, stop early."""

from __future__ import annotations

import math

import keras

MONITOR = "val_loss"


class KeepBestEpoch(keras.callbacks.Callback):
    """Tracks the eval loss; at the end of fit, restores the weights of its best epoch.

    Unlike keras.callbacks.EarlyStopping, the weights the phase starts from count as epoch 0:
    a fine-tuning phase that never beats them gives them back, so a phase cannot make the
    model worse on the eval split. The eval loss (not accuracy) decides because it moves with
    every example's confidence, where accuracy on a few hundred images moves in coarse steps.
    """

    def __init__(self, patience: int, start_loss: float | None = None):
        """Args:
          patience: stop after this many epochs (>= 1) without a lower eval loss.
          start_loss: the eval loss of the weights at the start (epoch 0), if they compete.
        """
        super().__init__()
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = patience
        self.start_loss = start_loss
        self.best_loss = math.inf
        self.best_epoch = 0  # 1-based; 0 = the weights the phase started from
        self._best_weights: list | None = None
        self._epochs_run = 0

    def on_train_begin(self, logs=None) -> None:  # noqa: D102
        if self.start_loss is not None:
            self.best_loss = self.start_loss
            self._best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: D102
        self._epochs_run += 1
        loss = (logs or {}).get(MONITOR)
        if loss is None:
            raise ValueError(f"best-epoch selection needs {MONITOR}: pass validation_data")
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = float(loss), self._epochs_run
            self._best_weights = self.model.get_weights()
        elif self._epochs_run - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:  # noqa: D102
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
