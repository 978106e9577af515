"""Run job specs in this process: ``python -m dlrun.execution.worker <job dir>/job.json [...]``.

Any process on any host that sees the job directory can run a job from it alone. The job's
devices are set before TensorFlow is imported (``CUDA_VISIBLE_DEVICES``, TensorFlow's and
OpenMP's thread counts); where the launcher already chose them (Ray, Slurm) the spec leaves
them alone. Ctrl-C and SIGTERM stop a job at a safe point (its checkpoint saved, its folder
marked KILLED), as in ``dlrun train``.

``--serve DEVICES`` is the local executor's worker: it imports TensorFlow once, then reads job
paths from stdin one per line and reports on stdout as JSON lines (``ready``, the reporter's
events, ``done``), so one worker runs many jobs and the parent shows their progress. Exit
status: 0 every job finished · 1 a job failed (or its spec was unreadable) · 130/143 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Callable

from dlrun.report import PlainReporter, Reporter


def _fold(spec, reporter) -> None:
    from dlrun.training.fold_job import run_fold_spec

    run_fold_spec(spec, reporter)


def _tune_worker(spec, reporter) -> None:
    from dlrun.tuning.workers import run_tune_worker

    run_tune_worker(spec, reporter)


# Job kinds → the functions that run them (never a function named by a file).
JOB_KINDS: dict[str, Callable] = {"fold": _fold, "refit": _fold, "tune-worker": _tune_worker}


def apply_devices(devices: dict | None) -> None:
    """Set this process's devices; only effective before TensorFlow is imported."""
    devices = devices or {}
    if devices.get("gpus") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in devices["gpus"])
    threads = devices.get("cpu_threads")
    if threads:
        for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            os.environ[name] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))


def _start_tensorflow(devices: dict | None) -> None:
    """Import TensorFlow quietly with the devices' thread counts (before any TensorFlow work)."""
    from dlrun.tf_runtime import import_tensorflow_quietly

    fresh = "tensorflow" not in sys.modules
    import_tensorflow_quietly()
    threads = (devices or {}).get("cpu_threads")
    if fresh and threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, int(threads))))


def run_file(path: str, reporter: Reporter | None = None) -> str:
    """Run the job spec at ``path`` here; its status (FINISHED, or raises as the job did)."""
    from dlrun.training.jobspec import JobSpec

    spec = JobSpec.read(path)
    if "tensorflow" not in sys.modules:
        apply_devices(spec.devices)
        _start_tensorflow(spec.devices)
    JOB_KINDS[spec.kind](spec, reporter or PlainReporter(sys.stdout))
    return "FINISHED"


def run_submitted(path: str) -> str:
    """A Slurm array task's job (submitit calls this on the node): signals stop it safely."""
    from dlrun.training.interrupts import install

    install()
    return run_file(path)


def run_job_process(path: str) -> int:
    """Run one job spec in a fresh worker process and wait for it; its exit status. A
    KeyboardInterrupt here (Ray's cancel) is forwarded as SIGTERM, once, and waited out."""
    # Its progress goes to stderr: a launcher relays it there (stdout may be the parent's --json).
    proc = subprocess.Popen([sys.executable, "-m", "dlrun.execution.worker", str(path)], stdout=sys.stderr.fileno())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()


class EventReporter(Reporter):
    """A reporter that writes each event as one JSON line for the parent to replay."""

    def __init__(self, emit: Callable[[dict], None]):
        self.emit = emit

    def job_started(self, job, epochs, done=0):
        self.emit({"event": "job_started", "job": job, "epochs": epochs, "done": done})

    def epoch(self, job, epoch, epochs, logs, seconds):
        self.emit({"event": "epoch", "job": job, "epoch": epoch, "epochs": epochs, "logs": logs,
                   "seconds": seconds})

    def job_finished(self, job, metrics):
        self.emit({"event": "job_finished", "job": job, "metrics": metrics})

    def note(self, text):
        self.emit({"event": "note", "text": text})

    def warn(self, text):
        self.emit({"event": "warn", "text": text})


def replay(event: dict, reporter: Reporter) -> None:
    """Hand a worker's reporter event to the parent's reporter."""
    kind = event.get("event")
    if kind == "job_started":
        reporter.job_started(event["job"], event["epochs"], done=event.get("done", 0))
    elif kind == "epoch":
        reporter.epoch(event["job"], event["epoch"], event["epochs"], event["logs"], event["seconds"])
    elif kind == "job_finished":
        reporter.job_finished(event["job"], event["metrics"])
    elif kind in ("note", "warn"):
        getattr(reporter, kind)(event["text"])


def _event_stream() -> Callable[[dict], None]:
    """Events go to the real stdout; anything else printed goes to stderr instead."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def emit(event: dict) -> None:
        out.write(json.dumps(event, default=str) + "\n")
        out.flush()

    return emit


def _follow_parent() -> None:
    """Get SIGTERM when the parent dies, even by SIGKILL (Linux): stop at a safe point rather
    than train on as an orphan."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != os.environ.get("DLRUN_PARENT_PID", str(os.getppid())):
        os.kill(os.getpid(), signal.SIGTERM)  # it died before we asked


def serve(devices: dict) -> int:
    from dlrun.training.interrupts import install

    emit = _event_stream()
    install()
    _follow_parent()
    apply_devices(devices)
    _start_tensorflow(devices)
    # What a job imports, loaded while the parent still prepares the run (no job waits yet).
    import keras  # noqa: F401
    import mlflow  # noqa: F401

    from dlrun.training import fold_job  # noqa: F401

    emit({"event": "ready", "pid": os.getpid()})
    code = 0
    try:
        for line in sys.stdin:
            path = line.strip()
            if not path:
                continue
            status, error = _run_reported(path, EventReporter(emit))
            emit({"event": "done", "job": path, "status": status, "error": error})
            if status == "KILLED":
                return 143 if "SIGTERM" in (error or "") else 130
            code = code or (0 if status == "FINISHED" else 1)
    except KeyboardInterrupt as exc:  # while waiting for a job: nothing to save
        return 143 if getattr(exc, "signal_name", "") == "SIGTERM" else 130
    return code


def _exit_now(code: int) -> None:
    """End without the interpreter's slow teardown (TensorFlow's, seconds): every job has
    ended its MLflow runs and closed its files, and the parent waits for this exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_reported(path: str, reporter: Reporter) -> tuple[str, str | None]:
    from dlrun.errors import DlrunError

    try:
        return run_file(path, reporter), None
    except KeyboardInterrupt as exc:
        return "KILLED", f"interrupted ({getattr(exc, 'signal_name', 'SIGINT')})"
    except DlrunError as exc:
        return "FAILED", str(exc)
    except Exception as exc:  # noqa: BLE001 - the job recorded it; the worker goes on
        return "FAILED", f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        _exit_now(serve(json.loads(argv[1]) if len(argv) > 1 else {}))
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from dlrun.training.interrupts import install

    install()
    code = 0
    for path in argv:
        status, error = _run_reported(path, PlainReporter(sys.stdout))
        if status != "FINISHED":
            print(f"dlrun worker: {path}: {status}: {error}", file=sys.stderr, flush=True)
        if status == "KILLED":
            return 143 if "SIGTERM" in (error or "") else 130
        if status != "FINISHED":
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
