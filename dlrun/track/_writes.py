"""Write helpers for the MLflow store: retry on a locked SQLite database, and a
background writer so per-epoch metrics never block the training loop.

Why not MLflow's own async logging (``MlflowClient.log_batch(..., synchronous=False)``)?
In MLflow 3.17 it is one global queue per store URI drained by a pool of 10 threads
(``MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE``) that write concurrently — more lock contention on
SQLite — and a failed batch is only logged at ERROR level, never retried. Our writer is one
daemon thread per :class:`~dlrun.track.mlflow_store.Tracker` that writes batches in order
through :func:`retry_locked`, and ``flush`` really waits for the run's data.

No mlflow import here: the writer calls whatever function it is given.
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, TypeVar

log = logging.getLogger("dlrun.track")

T = TypeVar("T")

_LOCK_MARKERS = ("database is locked", "database is busy", "database table is locked")

_retries = 0  # locked-store retries this process needed (reported as a run tag)
_retries_lock = threading.Lock()


def retries_so_far() -> int:
    """How many times :func:`retry_locked` waited on a locked store in this process."""
    return _retries


def exception_chain(exc: BaseException | None, limit: int = 10):
    """``exc`` and the exceptions it wraps (``__cause__``/``__context__``), at most ``limit``."""
    while exc is not None and limit > 0:
        yield exc
        exc = exc.__cause__ or exc.__context__
        limit -= 1


def is_locked_error(exc: BaseException) -> bool:
    """True for SQLite's transient "database is locked"/"busy" errors, however wrapped."""
    return any(any(marker in str(e).lower() for marker in _LOCK_MARKERS) for e in exception_chain(exc, 8))


def retry_locked(
    fn: Callable[..., T],
    *args: Any,
    attempts: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``, retried with exponential backoff and jitter while the store
    answers "database is locked". Other errors propagate at once.

    MLflow already sets ``PRAGMA busy_timeout = 20000`` on SQLite, so reaching this means heavy
    contention; 8 attempts add up to about 6 s of extra waiting at most.
    """
    global _retries
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_locked_error(exc):
                raise
            with _retries_lock:
                _retries += 1
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.debug("store locked (%s); retry %d/%d in %.2fs", exc, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class BackgroundWriter:
    """One daemon thread that runs submitted writes in order, each through :func:`retry_locked`.

    ``submit(key, fn, *args)`` returns at once; ``flush(key)`` waits until every write submitted
    for ``key`` (a run id) is done and returns the errors those writes raised (they are also
    logged as warnings). A failed write never stops training.
    """

    def __init__(self, name: str = "dlrun-mlflow-writer"):
        self._name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._errors: dict[str, list[BaseException]] = {}
        self._done = threading.Condition(self._lock)
        self._atexit_registered = False

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
                if not self._atexit_registered:  # a run never ended still gets its epochs
                    atexit.register(self.drain, 10.0)
                    self._atexit_registered = True
            # put under the lock: the idle thread decides to exit under the same lock
            self._queue.put((key, fn, args, kwargs))

    def pending(self, key: str) -> int:
        with self._lock:
            return self._pending.get(key, 0)

    def flush(self, key: str, timeout: float | None = 120.0) -> list[BaseException]:
        """Wait for ``key``'s writes; return (and forget) the errors they raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._pending.get(key, 0) > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    log.warning("MLflow writes of run %s still pending after %.0fs", key, timeout)
                    break
                self._done.wait(remaining)
            return self._errors.pop(key, [])

    def drain(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` seconds in all) for every pending write."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self._pending and time.monotonic() < deadline:
                self._done.wait(deadline - time.monotonic())

    def _loop(self) -> None:
        while True:
            try:
                key, fn, args, kwargs = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                retry_locked(fn, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - reported by flush, never raised here
                log.warning("MLflow write for run %s failed: %s", key, exc)
                with self._lock:
                    self._errors.setdefault(key, []).append(exc)
            finally:
                with self._done:
                    self._pending[key] -= 1
                    if self._pending[key] <= 0:
                        del self._pending[key]
                    self._done.notify_all()
