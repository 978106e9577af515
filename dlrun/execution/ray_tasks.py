"""``--executor ray``: each job a Ray core task (not Ray Train: Keras 3's multi-worker strategy
does not work with ``fit``), against ``--ray-address``/``RAY_ADDRESS`` or a local Ray started
for the run and shut down after it.

A task asks Ray for ``num_gpus`` GPUs and ``num_cpus`` cores; Ray sets the task's
``CUDA_VISIBLE_DEVICES``, and the task runs the job in a fresh worker process (TensorFlow
imported there, after the devices are set), so a crash fails that job alone. Tasks are never
retried (a job that crashed once would crash again; ``dlrun train --resume`` re-runs it).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from dlrun.errors import UsageError
from dlrun.report import Reporter
from dlrun.training.jobspec import JobOutcome, JobSpec, signal_cause


def import_ray():
    import os

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each job's progress lines, not "repeated 2x"
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed here: pip install 'dlrun[ray]'") from None
    return ray


def is_this_host(address: str | None) -> bool:
    """Whether a Ray address names this host (then its nodes are counted after connecting)."""
    if address in (None, "", "auto", "local"):
        return True
    host = urlsplit(address if "://" in address else f"ray://{address}").hostname or ""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return host in names


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_job: int = 0,
                 cpus_per_job: int = 1):
        self.address, self.workers = address, workers
        self.gpus_per_job, self.cpus_per_job = gpus_per_job, cpus_per_job
        self.connected = False  # by this executor (then it disconnects, and stops a Ray it started)
        self.ray = import_ray()

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers or "as Ray schedules",
                "address": self.address or "local Ray started for the run", "gpus_per_job": self.gpus_per_job,
                "cpus_per_job": self.cpus_per_job}

    def connect(self) -> "RayExecutor":
        ray = self.ray
        if not ray.is_initialized():
            if self.address is None:  # a Ray of this host's cores and GPUs, for this run only
                ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
            else:
                ray.init(address=self.address, log_to_driver=True, configure_logging=False)
            self.connected = True
        return self

    def start(self) -> "RayExecutor":
        """Connect now (a local Ray starts while the parent prepares the run)."""
        return self.connect()

    def nodes(self) -> int:
        return sum(1 for node in self.connect().ray.nodes() if node.get("Alive"))

    def close(self) -> None:
        if self.connected and self.ray.is_initialized():
            self.ray.shutdown()  # a local Ray started for the run stops; a cluster only loses this driver
        self.connected = False

    def run(self, specs: list[JobSpec], in_process=None, reporter: Reporter | None = None) -> list[JobOutcome]:
        from dlrun.execution.worker import run_job_process

        ray = self.connect().ray
        reporter = reporter or Reporter()
        task = ray.remote(run_job_process).options(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                                                   max_retries=0, name="dlrun-job")
        limit = self.workers or len(specs)
        waiting, running, outcomes = list(specs), {}, {}
        try:
            while waiting or running:
                while waiting and len(running) < limit:
                    spec = waiting.pop(0)
                    spec.devices = {"gpus": None, "cpu_threads": self.cpus_per_job}  # Ray sets the GPUs
                    spec.write()
                    running[task.remote(str(spec.path))] = spec
                    reporter.note(f"{spec.name}: submitted to Ray")
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in done:
                    spec = running.pop(ref)
                    outcomes[spec.name] = self._outcome(spec, ref)
        except KeyboardInterrupt:
            reporter.note(f"stopping {len(running)} Ray task(s) at a safe point (their checkpoints are kept)")
            for ref in running:
                ray.cancel(ref)  # a KeyboardInterrupt in the task, which forwards SIGTERM to its job
            deadline = time.monotonic() + 120
            while running and time.monotonic() < deadline:
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=1.0)
                for ref in done:
                    running.pop(ref)
            raise
        return [outcomes[s.name] for s in specs]

    def _outcome(self, spec: JobSpec, ref) -> JobOutcome:
        try:
            code = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the task's worker died (node lost, OOM kill)
            return JobOutcome(spec.name, spec.job_dir, "FAILED", f"Ray task failed: {type(exc).__name__}: "
                                                                 f"{str(exc).splitlines()[0] if str(exc) else ''}")
        if code == 0:
            return JobOutcome(spec.name, spec.job_dir, "FINISHED")
        return JobOutcome(spec.name, spec.job_dir, "KILLED" if code in (130, 143) else "FAILED", signal_cause(code))
