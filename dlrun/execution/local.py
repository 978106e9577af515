"""``--executor local``: N worker processes on this host, each with its own devices.

Workers are fresh interpreters (``python -m dlrun.execution.worker --serve``, never a fork of
a process that imported TensorFlow), started as soon as the executor is made so that their
TensorFlow import overlaps the parent's data loading and preflight. Each takes one job at a
time from a queue; its progress is replayed on the parent's reporter. A worker that dies
(segfault, out-of-memory kill, SIGKILL) fails only its job: a new worker takes the rest of
the queue. Ctrl-C or SIGTERM to the parent is forwarded once to the busy workers, which stop
at a safe point (checkpoint saved, job KILLED); then the parent raises it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections import deque

from dlrun.execution.devices import local_slots
from dlrun.execution.worker import replay
from dlrun.report import Reporter
from dlrun.training.jobspec import JobOutcome, JobSpec, signal_cause


class _Worker:
    def __init__(self, slot: dict):
        self.slot = slot
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "DLRUN_PARENT_PID": str(os.getpid())}
        # Its own session: a Ctrl-C at the terminal reaches the parent only, which forwards it once.
        self.proc = subprocess.Popen([sys.executable, "-m", "dlrun.execution.worker", "--serve", json.dumps(slot)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.job: JobSpec | None = None
        self.ready = self.started = False
        self.pending = b""

    def give(self, spec: JobSpec) -> None:
        spec.devices = self.slot
        spec.write()
        self.job, self.ready = spec, False
        self.proc.stdin.write(f"{spec.path}\n".encode())
        self.proc.stdin.flush()

    def lines(self, data: bytes) -> list[dict]:
        self.pending += data
        *complete, self.pending = self.pending.split(b"\n")
        events = []
        for line in complete:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def stop(self, sig=None) -> None:
        try:
            if sig is None:
                self.proc.stdin.close()  # no more jobs: the worker ends when its job does
            else:
                self.proc.send_signal(sig)
        except (OSError, ValueError):
            pass


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int | None = None, gpus: list[str] | None = None, gpus_per_job: int = 1):
        self.slots = local_slots(workers, gpus, gpus_per_job)
        self.workers = len(self.slots)
        self.gpus_per_job = gpus_per_job
        self.pool: list[_Worker] = []
        self.start_error = "no worker process"

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers, "gpus_per_job": self.gpus_per_job,
                "devices": self.slots}

    def start(self) -> "LocalExecutor":
        """Start every worker now (each imports TensorFlow while the parent prepares the run)."""
        while len(self.pool) < self.workers:
            self.pool.append(_Worker(self.slots[len(self.pool)]))
        return self

    def close(self) -> None:
        for worker in self.pool:
            worker.stop()
        for worker in self.pool:
            try:
                worker.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            worker.proc.stdout.close()
        self.pool = []

    def run(self, specs: list[JobSpec], in_process=None, reporter: Reporter | None = None) -> list[JobOutcome]:
        """Run ``specs`` on the workers, at most one job each at a time; how each ended."""
        reporter = reporter or Reporter()
        self.start()
        queue, outcomes = deque(specs), {}
        selector = selectors.DefaultSelector()
        for worker in self.pool:
            selector.register(worker.proc.stdout, selectors.EVENT_READ, worker)
        try:
            self._loop(selector, queue, outcomes, reporter)
        except KeyboardInterrupt:
            self._interrupt(selector, outcomes, reporter)
            raise
        finally:
            selector.close()
        return [outcomes.get(s.name) or JobOutcome(s.name, s.job_dir, "KILLED", "not started") for s in specs]

    def _loop(self, selector, queue: deque, outcomes: dict, reporter: Reporter, stopping: bool = False) -> None:
        while (queue and not stopping) or any(w.job is not None for w in self.pool):
            if not self.pool:  # every worker died before it could take a job
                while queue:
                    job = queue.popleft()
                    outcomes[job.name] = JobOutcome(job.name, job.job_dir, "FAILED", self.start_error)
                return
            for worker in self.pool:  # idle since an earlier run
                if worker.ready and worker.job is None and queue and not stopping:
                    worker.give(queue.popleft())
            for key, _ in selector.select(timeout=1.0):
                worker = key.data
                data = os.read(worker.proc.stdout.fileno(), 65536)
                if not data:
                    self._lost(selector, worker, outcomes, None if stopping else queue)
                    continue
                for event in worker.lines(data):
                    if event.get("event") == "ready":
                        worker.ready = worker.started = True
                    elif event.get("event") == "done" and worker.job is not None:
                        job = worker.job
                        outcomes[job.name] = JobOutcome(job.name, job.job_dir, event["status"], event.get("error"))
                        worker.job, worker.ready = None, True
                    else:
                        replay(event, reporter)
                if worker.ready and worker.job is None and queue and not stopping:
                    worker.give(queue.popleft())

    def _lost(self, selector, worker: _Worker, outcomes: dict, queue: deque | None) -> None:
        """A worker ended (it closed its output): its job failed with the cause; a new worker
        with the same devices takes the rest of the queue."""
        selector.unregister(worker.proc.stdout)
        code = worker.proc.wait()
        worker.proc.stdout.close()
        self.pool.remove(worker)
        if worker.job is not None:
            job = worker.job
            outcomes[job.name] = JobOutcome(job.name, job.job_dir, "FAILED", signal_cause(code))
            worker.job = None
        elif not worker.started:  # it could not even start: another would fail alike
            self.start_error = f"the worker process could not start ({signal_cause(code)}; see its errors above)"
            return
        if queue:
            fresh = _Worker(worker.slot)
            self.pool.append(fresh)
            selector.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)

    def _interrupt(self, selector, outcomes: dict, reporter: Reporter) -> None:
        """Forward the signal once to busy workers and let them stop at a safe point; a second
        one kills them."""
        busy = [w for w in self.pool if w.job is not None]
        reporter.note(f"stopping {len(busy)} running job(s) at a safe point (their checkpoints are kept)")
        for worker in self.pool:
            worker.stop(signal.SIGTERM if worker.job is not None else None)
        try:
            self._loop(selector, deque(), outcomes, reporter, stopping=True)
        except KeyboardInterrupt:
            for worker in self.pool:
                worker.stop(signal.SIGKILL)
        self.close()
