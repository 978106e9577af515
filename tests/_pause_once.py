"""A recipe plugin for tests: a callback that pauses once, at the end of one epoch, so that a
time-based checkpoint (``fit.checkpoint_every``) falls due there on any machine. A marker file
remembers that it paused (a resumed run trains on undisturbed)."""

import time
from pathlib import Path

import keras


class PauseOnce(keras.callbacks.Callback):
    def __init__(self, epoch, seconds, marker):
        super().__init__()
        self.epoch, self.seconds, self.marker = epoch, seconds, Path(marker)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch and not self.marker.exists():
            self.marker.write_text("paused")
            time.sleep(self.seconds)
