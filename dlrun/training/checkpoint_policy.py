"""When a job saves its training state (``fit.checkpoint_every``).

A save costs about as much as writing the weights (tens of milliseconds for a small model),
which on short epochs is a large share of the epoch. So an epoch's end saves only when
``checkpoint_every`` seconds have passed since the last save (0: every epoch), and always:

- at the end of a training stage (the job's last epoch, or early stopping);
- when Ctrl-C/SIGTERM stops training: where it stops, at the start of a batch (the state
  then holds exactly the batches before it), or at the end of the epoch whose validation it
  let finish;
- every ``fit.checkpoint_steps`` batches, when the recipe asks for that too.

An epoch's MLflow metrics wait for the save that covers it: MLflow never holds an epoch the
checkpoint lacks, so a resumed run, which trains again the epochs after its checkpoint, logs
no step twice. ``history.csv`` gets every epoch at once; ``--resume`` cuts it back to the
checkpoint. A run killed outright (SIGKILL, out of memory) loses at most ``checkpoint_every``
seconds of training.
"""

from __future__ import annotations

import time
from typing import Callable


class SavePolicy:
    """One job's saves. ``write(epoch, batch)`` saves the state after ``epoch`` whole epochs and
    ``batch`` batches of the next one (False: not saved, a non-finite state); ``log(epoch, logs)``
    sends one recorded epoch to MLflow. ``resumed_at``: (epoch, batch) of the checkpoint the job
    started from, if any."""

    def __init__(self, every: float | None, log: Callable[[int, dict], None],
                 resumed_at: tuple[int, int] | None = None, clock: Callable[[], float] = time.monotonic):
        self.every = every  # None: the recipe saves nothing (fit.checkpoint: false)
        self.write: Callable[[int, int], bool] = lambda epoch, batch: False  # set per fit call
        self._log, self._clock = log, clock
        self._last = clock()
        self.saved = resumed_at  # the position of the last save
        self.recorded = resumed_at[0] if resumed_at else 0  # whole epochs recorded
        self._unlogged: list[tuple[int, dict]] = []

    @property
    def enabled(self) -> bool:
        return self.every is not None

    def epoch_ended(self, epoch: int, logs: dict, last: bool, stopping: bool) -> None:
        """Epoch ``epoch`` (1-based) was recorded; ``last``: its stage ends with it; ``stopping``:
        a stop was asked (its validation was let finish)."""
        self.recorded = epoch
        self._unlogged.append((epoch, logs))
        if not self.enabled:
            self._flush()
        elif last or stopping or self._clock() - self._last >= self.every:
            self.save(epoch)

    def stopped_at(self, epoch: int, batch: int) -> None:
        """A stop came: the state after ``epoch`` whole epochs and ``batch`` batches is saved,
        unless an epoch before is missing from the record (its validation was cut short)."""
        if self.enabled and (epoch, batch) != (0, 0) and self.recorded == epoch:
            self.save(epoch, batch)

    def save(self, epoch: int, batch: int = 0) -> bool:
        if self.saved == (epoch, batch):
            return True
        if not self.write(epoch, batch):
            return False
        self.saved, self._last = (epoch, batch), self._clock()
        self._flush()
        return True

    def _flush(self) -> None:
        """Every recorded epoch goes to MLflow (a save covers them all: it is never older)."""
        pending, self._unlogged = self._unlogged, []
        for epoch, logs in pending:
            self._log(epoch, logs)
