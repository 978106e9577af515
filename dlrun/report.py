"""What a run prints while it works: rich on a terminal, one plain line per epoch otherwise.

Keras' own progress bar is off (``verbose=0``); these reporters are the only output.
"""

from __future__ import annotations

import sys
from typing import IO, Any


_PREFIXES = ("val_", "test_")


def _metric_order(key: str) -> tuple:
    """Training, then validation, then test values; loss first in each group."""
    group = next((i + 1 for i, p in enumerate(_PREFIXES) if key.startswith(p)), 0)
    name = key[len(_PREFIXES[group - 1]):] if group else key
    return (group, name != "loss", name)


def format_metrics(logs: dict[str, float]) -> str:
    keys = sorted((k for k in logs if k != "learning_rate"), key=_metric_order)
    return " ".join(f"{k}={logs[k]:.4g}" if isinstance(logs[k], float) else f"{k}={logs[k]}" for k in keys)


def warning_line(text: str) -> str:
    """The one plain line of a warning: ``dlrun: warning: <text>``."""
    return f"dlrun: warning: {text}"


class Reporter:
    """Silent base (``--quiet``): every hook is a no-op but :meth:`warn`."""

    # Whether :meth:`batch` shows anything: the job then reports every training batch.
    wants_batches = False

    def run_started(self, info: dict[str, Any]) -> None: ...

    def job_started(self, job: str, epochs: int, done: int = 0) -> None:
        """``job`` trains ``epochs`` epochs in all, ``done`` of them before (a resumed job)."""

    def batch(self, job: str, epoch: int, batch: int, batches: int | None, logs: dict[str, float]) -> None:
        """``batch`` training batches of epoch ``epoch`` (1-based) done, of ``batches`` (None: not known yet)."""

    def epoch(self, job: str, epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> None: ...

    def job_finished(self, job: str, metrics: dict[str, float]) -> None: ...

    def step(self, job: str, done: int, total: int, logs: dict[str, float]) -> None:
        """Progress of a task that is not fit (an image optimized step by step)."""

    def note(self, text: str) -> None: ...

    def warn(self, text: str) -> None:
        """Something that changes what the run does or loses something (tracking gone offline):
        said even under ``--quiet``, as one line on stderr."""
        print(warning_line(text), file=sys.stderr, flush=True)

    def run_finished(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class PlainReporter(Reporter):
    """Batch logs: one line per event, no control characters, flushed at once."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run_started(self, info):
        self._line(f"dlrun: {info['protocol']} run of '{info['recipe']}' → {info['run_dir']}")

    def epoch(self, job, epoch, epochs, logs, seconds):
        self._line(f"[{job}] epoch {epoch}/{epochs} {format_metrics(logs)} ({seconds:.2f}s)")

    def job_finished(self, job, metrics):
        if metrics:
            self._line(f"[{job}] done: {format_metrics(metrics)}")

    def step(self, job, done, total, logs):
        if done == total or done % max(1, total // 20) == 0:  # about 20 lines a task
            self._line(f"[{job}] step {done}/{total} {format_metrics(logs)}".rstrip())

    def note(self, text):
        self._line(f"dlrun: {text}")

    def warn(self, text):
        self._line(warning_line(text))

    def run_finished(self, summary):
        self._line(f"dlrun: {summary['status']} run {summary['run_id']} in {summary['run_dir']}")
        if summary.get("metrics"):
            self._line("dlrun: " + format_metrics(summary["metrics"]))


class RichReporter(Reporter):
    """A terminal: per job a bar of its epochs with the latest metrics, under it a bar of the
    current epoch's batches with its time left and running loss; a table at the end."""

    wants_batches = True

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[job]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}  # job → its epochs' bar
        self.done: dict[str, int] = {}  # job → epochs done
        self.batches: dict[str, tuple[Any, int]] = {}  # job → its current epoch's batch bar, that epoch
        self.progress.start()

    def run_started(self, info):
        self.console.print(f"[bold]dlrun[/] {info['protocol']} · {info['recipe']} · {info['run_dir']}")

    def job_started(self, job, epochs, done=0):
        self.tasks[job] = self.progress.add_task("", total=epochs, completed=done, job=job, unit="epochs",
                                                 metrics="")
        self.done[job] = done

    def batch(self, job, epoch, batch, batches, logs):
        if job not in self.tasks:
            return
        loss = logs.get("loss")
        metrics = f"loss={loss:.4g}" if isinstance(loss, float) else ""
        task, shown = self.batches.get(job, (None, None))
        if shown != epoch:  # a new epoch: a fresh bar
            if task is not None:
                self.progress.remove_task(task)
            task = self.progress.add_task("", total=batches, job=f"  epoch {epoch}", unit="batches", metrics="")
            self.batches[job] = (task, epoch)
        self.progress.update(task, completed=batch, total=batches, metrics=metrics)

    def epoch(self, job, epoch, epochs, logs, seconds):
        if job not in self.tasks:
            self.job_started(job, epochs)
        self.progress.update(self.tasks[job], completed=epoch, total=epochs, metrics=format_metrics(logs))
        self.done[job] = epoch

    def step(self, job, done, total, logs):
        self.epoch(job, done, total, logs, 0.0)

    def job_finished(self, job, metrics):
        if job in self.batches:
            self.progress.remove_task(self.batches.pop(job)[0])
        if job in self.tasks:  # early stopping ends a bar before its total
            self.progress.update(self.tasks[job], total=self.done[job])

    def note(self, text):
        self.console.print(f"[dim]{text}[/]")

    def warn(self, text):
        from rich.text import Text

        self.console.print(Text(warning_line(text), style="yellow"))  # as written: no markup, no highlighting

    def run_finished(self, summary):
        from rich.table import Table

        self.progress.stop()
        table = Table(title=f"{summary['recipe']} — {summary['status']}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in summary.get("metrics", {}).items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        self.console.print(table)
        self.console.print(f"run [bold]{summary['run_id']}[/] · {summary['run_dir']}")

    def close(self):
        self.progress.stop()


def make_reporter(*, quiet: bool, json_mode: bool) -> Reporter:
    """--quiet: nothing but warnings (on stderr); --json: plain lines on stderr (stdout is the
    JSON); a TTY: rich."""
    if quiet:
        return Reporter()
    if json_mode:
        return PlainReporter(sys.stderr)
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter(sys.stdout)
