"""Ctrl-C and SIGTERM stop training at a safe point.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside Keras' fit
loop that can be while its batch-end callbacks still run on a worker thread, and tearing
the run down under them has crashed the process (SIGSEGV). So while a job trains, a
first signal is only noted; Keras is asked to stop at the next batch (train or
validation), and the job raises :class:`Interrupted` once ``fit``/``evaluate`` have
returned. Outside a job, or on a second signal, it is raised at once.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


class _State:
    protected = False  # inside a job's fit/evaluate
    pending: str | None = None  # the signal noted there


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handle` (the CLI does this; notebooks keep theirs)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def _handle(signum, frame) -> None:  # noqa: ARG001
    name = signal.Signals(signum).name
    if _State.protected and _State.pending is None:
        _State.pending = name
        return
    raise Interrupted(name)


def pending() -> str | None:
    return _State.pending


@contextmanager
def safe_points() -> Iterator[None]:
    """Defer signals to the callback's safe points for the duration of a job's Keras calls."""
    _State.protected, _State.pending = True, None
    try:
        yield
    finally:
        _State.protected = False
    if _State.pending:
        name, _State.pending = _State.pending, None
        raise Interrupted(name)


def safe_stop_callback():
    """A Keras callback that turns a noted signal into Keras' own stop flags."""
    import keras

    class SafeStop(keras.callbacks.Callback):
        # Only *_begin hooks: overriding a batch-end hook would turn off Keras' async dispatch.
        def on_epoch_begin(self, epoch, logs=None):
            if _State.pending:  # the previous epoch's batch-end work has been flushed here
                self.model.stop_training = True

        def on_train_batch_begin(self, batch, logs=None):
            if _State.pending:
                self.model.stop_training = True

        def on_test_batch_begin(self, batch, logs=None):
            if _State.pending:
                self.model.stop_evaluating = True

    return SafeStop()
