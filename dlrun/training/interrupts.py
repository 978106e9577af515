"""Ctrl-C and SIGTERM stop training at a safe point, and a run always ends in one state.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside Keras' fit
loop that can be while its batch-end callbacks still run on a worker thread, and tearing
the run down under them has crashed the process (SIGSEGV). So while a job trains, a
first signal is only noted; Keras is asked to stop at the next training batch (or
validation batch: a job that saves checkpoints lets ``fit`` finish validating the epoch,
so the epoch is whole and saved), and the job raises :class:`Interrupted` once
``fit``/``evaluate`` have returned. Outside a job, or on a second signal, it is raised at once.

Once a run exists (:func:`live_run`) and has started to end — a signal was raised into it,
or the runner called :func:`begin_ending` — later signals are noted, not raised: the run's
final state is written to ``run.json`` and MLflow whatever arrives. Only the upload of its
files (:func:`cut_short`) is stopped by such a signal; :func:`ending_signals` tells the
runner what came, so the message can say so.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run; ``signals``: every signal that stopped it, in order
    (``["SIGINT", "SIGTERM"]``: a second signal stopped it at once)."""

    def __init__(self, signal_name: str = "SIGINT", signals: list[str] | None = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.signals = list(signals or [signal_name])


class _State:
    protected = False  # inside a job's fit/evaluate
    pending: str | None = None  # the signal noted there
    cut = False  # the noted signal cut the current epoch short (its batches, or its validation)
    live = False  # a run exists: it must end in one recorded state
    noted: list[str] | None = None  # the live run is ending: signals go here instead of being raised
    cuttable = False  # a noted signal stops the work in hand (the upload of the run's files)
    last_run: str | None = None  # how the last run of this process ended, for a later interruption's message


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handle` (the CLI does this; notebooks keep theirs)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def _handle(signum, frame) -> None:  # noqa: ARG001
    name = signal.Signals(signum).name
    if _State.noted is not None:
        _State.noted.append(name)
        if _State.cuttable:
            _State.cuttable = False
            raise Interrupted(name)
        return
    if _State.protected and _State.pending is None:
        _State.pending = name
        return
    _raise([_State.pending, name] if _State.protected else [name])


def _raise(signals: list[str]) -> None:
    if _State.live:
        _State.noted = []  # the run ends from here on: a further signal must not cut that short
    raise Interrupted(signals[0], signals)


def pending() -> str | None:
    return _State.pending


def epoch_cut() -> bool:
    """Whether a noted signal stopped the current epoch before its end: such an epoch is
    trained again on --resume, so it is neither recorded nor seen by callbacks."""
    return _State.cut


@contextmanager
def safe_points() -> Iterator[None]:
    """Defer signals to the callback's safe points for the duration of a job's Keras calls."""
    _State.protected, _State.pending, _State.cut = True, None, False
    try:
        yield
    finally:
        _State.protected = False
    if _State.pending:
        name, _State.pending = _State.pending, None
        _raise([name])


@contextmanager
def live_run(description: Callable[[], str]) -> Iterator[None]:
    """While a run exists: once it starts ending, signals are noted, not raised. On the way out,
    ``description()`` (e.g. ``run X FINISHED in DIR``) is kept for the message of a signal
    that lands after the run ended."""
    outer = (_State.live, _State.noted)
    _State.live, _State.noted = True, None
    try:
        yield
    finally:
        _State.live, _State.noted = outer
        _State.cuttable = False
        _State.last_run = description()


def begin_ending() -> None:
    """The live run starts to write its final state: from now on signals are only noted."""
    if _State.live and _State.noted is None:
        _State.noted = []


def ending_signals() -> list[str]:
    """The signals noted since the live run began to end."""
    return list(_State.noted or [])


def cut_short(work: Callable[[], None]) -> bool:
    """Run ``work`` (the upload of a run's files) unless a signal already came while the run
    was ending; a signal during it stops it at once. True when it ran to the end."""
    if _State.noted:
        return False
    try:
        _State.cuttable = _State.noted is not None
        try:
            work()
        finally:
            _State.cuttable = False
    except KeyboardInterrupt as exc:
        if _State.noted is None:
            raise  # no run is ending: not ours to swallow
        if not isinstance(exc, Interrupted):
            _State.noted.append("SIGINT")  # Python's own Ctrl-C handler (a notebook)
        return False
    return True


def last_run() -> str | None:
    """How the last run of this process ended (None: no run was created)."""
    return _State.last_run


def safe_stop_callback(finish_validation: bool = False):
    """A Keras callback that turns a noted signal into Keras' own stop flags.
    ``finish_validation``: a signal noted while ``fit`` validates an epoch lets that validation
    finish, so the epoch is whole and its state can be saved (a job that saves checkpoints);
    otherwise the validation stops at its next batch, as a final evaluation always does."""
    import keras

    class SafeStop(keras.callbacks.Callback):
        fitting = False

        # Only *_begin hooks: overriding a batch-end hook would turn off Keras' async dispatch.
        def on_train_begin(self, logs=None):
            self.fitting = True

        def on_train_end(self, logs=None):
            self.fitting = False

        def on_epoch_begin(self, epoch, logs=None):
            _State.cut = False
            if _State.pending:  # the previous epoch's batch-end work has been flushed here
                self._stop()

        def on_train_batch_begin(self, batch, logs=None):
            if _State.pending:
                self._stop()

        def on_test_batch_begin(self, batch, logs=None):
            if _State.pending and not (self.fitting and finish_validation):
                self.model.stop_evaluating = True
                _State.cut = _State.cut or self.fitting

        def _stop(self):
            self.model.stop_training = True
            _State.cut = True

    return SafeStop()
