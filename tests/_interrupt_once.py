"""A recipe plugin for tests: a callback that interrupts training once, at one batch of one
epoch, so an interruption lands mid-epoch at the same place on every machine. A marker file
remembers that it fired (a resumed run, or a twin, trains on undisturbed).

``signal: true`` sends the process a real SIGTERM (for a ``dlrun`` subprocess, whose handler
notes it); ``signal: false`` notes it the way that handler does (a run inside pytest).
``signals: [SIGINT, SIGTERM]`` sends those real signals one right after the other instead.
``validation: true``: at that batch of the epoch's validation, not of its training.
"""

import os
import signal as signals
from pathlib import Path

import keras

from dlrun.training import interrupts


class InterruptOnce(keras.callbacks.Callback):
    def __init__(self, epoch, batch, marker, signal=True, signals=None, validation=False):
        super().__init__()
        self.at, self.marker, self.signal = (epoch, batch), Path(marker), signal
        self.signals = signals or (["SIGTERM"] if signal else [])
        self.validation = validation  # at that batch of the epoch's validation instead

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if not self.validation:
            self._interrupt(batch)

    def on_test_batch_begin(self, batch, logs=None):
        if self.validation:
            self._interrupt(batch)

    def _interrupt(self, batch):
        if (self.epoch, batch) != self.at or self.marker.exists():
            return
        self.marker.write_text("interrupted")
        for name in self.signals:
            os.kill(os.getpid(), getattr(signals, name))
        if not self.signals:
            interrupts._State.pending = "SIGTERM"
