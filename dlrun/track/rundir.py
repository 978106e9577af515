"""One self-describing directory per run.

Layout::

    <output_root>/runs/<experiment>/<YYYYmmdd-HHMMSS>-<6 hex>[-<run name>]/
        run.json          status, start/end times, command, mlflow run id, error…
        history.csv       one row per finished epoch (written as it happens)
        folds/fold_1/     sub-runs (same API, see RunDir.child)

Times in folder names and in run.json are UTC, so folders written by hosts in
different time zones to one shared output root still sort in creation order.

Nothing here imports tensorflow, keras or mlflow.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import secrets
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from dlrun.errors import UsageError

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

HISTORY_FILE = "history.csv"
STATUS_FILE = "run.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_NAME = 80


def safe_name(name: str, default: str = "run") -> str:
    """``name`` as one safe path component: only ``[A-Za-z0-9_.-]``, no leading dot or dash.

    ``../etc/passwd`` → ``_etc_passwd``; an empty result becomes ``default``.
    """
    cleaned = _UNSAFE.sub("_", str(name)).lstrip(".-")[:_MAX_NAME].rstrip(".")
    return cleaned or default


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _plain(obj: Any) -> Any:
    """Containers and numpy scalars/arrays as plain Python, for JSON and YAML."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return _iso(obj)
    if hasattr(obj, "tolist"):  # numpy scalar or array, without importing numpy
        return _plain(obj.tolist())
    if hasattr(obj, "model_dump"):  # pydantic model
        return _plain(obj.model_dump(mode="json"))
    return str(obj)


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    """A run directory. Create one with :meth:`RunDir.create`; sub-runs with :meth:`child`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._history_header: list[str] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(cls, output_root: Path, experiment: str, run_name: str | None = None) -> "RunDir":
        """A new, empty directory ``<output_root>/runs/<experiment>/<time>-<hex>[-<run_name>]``.

        Raises :class:`~dlrun.errors.UsageError` naming the folder when the output root
        cannot be written (call this before training starts).
        """
        output_root = Path(output_root).expanduser().absolute()
        parent = output_root / "runs" / safe_name(experiment, "experiment")
        suffix = f"-{safe_name(run_name)}" if run_name else ""
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                stamp = utc_now().strftime("%Y%m%d-%H%M%S")
                path = parent / f"{stamp}-{secrets.token_hex(3)}{suffix}"
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                return cls(path)
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise UsageError(
                f"cannot write run directories under the output folder '{output_root}': {reason}"
                " — choose another folder with --output-root or fix its permissions"
            ) from exc
        raise UsageError(f"could not create a new run directory under '{parent}'")  # pragma: no cover

    def child(self, name: str) -> "RunDir":
        """A sub-run directory (``folds/fold_1``): each ``/``-separated part is made safe."""
        parts = [safe_name(p) for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts:
            raise ValueError(f"empty sub-run name {name!r}")
        path = self.path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path)

    # ------------------------------------------------------------------ files

    def file(self, rel: str | os.PathLike) -> Path:
        """The path of ``rel`` inside this run, its parent folders created."""
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise ValueError(f"{str(rel)!r} is not a path inside the run directory")
        path = self.path / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, rel: str | os.PathLike, text: str) -> Path:
        path = self.file(rel)
        _atomic_write(path, text)
        return path

    def write_json(self, rel: str | os.PathLike, obj: Any) -> Path:
        """JSON, indented; numpy values, paths and pydantic models are converted.

        NaN and infinities are written as ``NaN``/``Infinity`` (Python's json reads them back).
        """
        return self.write_text(rel, json.dumps(_plain(obj), indent=2, ensure_ascii=False) + "\n")

    def write_yaml(self, rel: str | os.PathLike, obj: Any) -> Path:
        import yaml

        text = yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True)
        return self.write_text(rel, text)

    def read_json(self, rel: str | os.PathLike) -> Any:
        return json.loads((self.path / rel).read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ history

    def append_history(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Append one row (``epoch`` first, 1-based) to ``history.csv`` right away.

        The header comes from the first row's keys. A key that appears later rewrites the
        file once with a wider header (earlier rows get empty cells, read back as NaN).
        """
        path = self.path / HISTORY_FILE
        header = self._history_header
        if header is None:
            header = self._read_header(path)
        keys = [str(k) for k in logs if str(k) != "epoch"]
        values = {str(k): v for k, v in logs.items()}
        if header is None:
            header = ["epoch", *keys]
            _atomic_write(path, _csv_line(header))
        elif any(k not in header for k in keys):
            header = header + [k for k in keys if k not in header]
            rows = self._read_rows(path)
            text = _csv_line(header) + "".join(
                _csv_line([row.get(h, "") for h in header]) for row in rows
            )
            _atomic_write(path, text)
        self._history_header = header
        row = [str(int(epoch))] + [_format_value(values.get(k)) for k in header[1:]]
        with open(path, "a", encoding="utf-8", newline="") as fh:
            fh.write(_csv_line(row))  # one write per row: a crash loses at most this row

    def read_history(self) -> dict[str, list[float]]:
        """``{metric: [value per epoch]}`` like ``keras.callbacks.History.history``.

        The ``epoch`` column is left out; missing cells are NaN; a last row cut short by a
        crash (no line end) is ignored. Empty dict when there is no history yet.
        """
        path = self.path / HISTORY_FILE
        header = self._read_header(path)
        if header is None:
            return {}
        history: dict[str, list[float]] = {k: [] for k in header if k != "epoch"}
        for row in self._read_rows(path):
            for key in history:
                history[key].append(_parse_value(row.get(key, "")))
        return history

    def truncate_history(self, epochs: int) -> dict[str, list[float]]:
        """Keep the first ``epochs`` rows of ``history.csv`` (a resumed job continues after
        its checkpoint; a row written after it is dropped) and return them as :meth:`read_history`."""
        path = self.path / HISTORY_FILE
        header = self._read_header(path)
        if header is None:
            return {}
        rows = [row for row in self._read_rows(path) if int(float(row.get("epoch", 0) or 0)) <= epochs]
        _atomic_write(path, _csv_line(header) + "".join(_csv_line([row.get(h, "") for h in header]) for row in rows))
        self._history_header = header
        return self.read_history()

    @staticmethod
    def _read_header(path: Path) -> list[str] | None:
        if not path.exists():
            return None
        with open(path, encoding="utf-8", newline="") as fh:
            first = fh.readline()
        if not first.endswith("\n"):
            return None
        return next(csv.reader([first]))

    @staticmethod
    def _read_rows(path: Path) -> list[dict[str, str]]:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        complete = [line for line in lines if line.endswith("\n")]
        if len(complete) < 2:
            return []
        reader = csv.reader(complete)
        header = next(reader)
        return [dict(zip(header, row)) for row in reader if len(row) == len(header)]

    # ------------------------------------------------------------------ status

    def write_status(self, status: str, **extra: Any) -> dict[str, Any]:
        """Write ``run.json``: status, start/end times (ISO UTC) and ``extra`` merged in.

        Fields written before are kept; ``start_time`` is set once, ``end_time`` and
        ``duration_s`` when the status is terminal (FINISHED, FAILED, KILLED).
        """
        status = status.upper()
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
        path = self.path / STATUS_FILE
        try:
            info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            info = {}
        now = utc_now()
        info["status"] = status
        info.setdefault("start_time", _iso(now))
        if status in TERMINAL_STATUSES:
            info["end_time"] = _iso(now)
            try:
                start = datetime.fromisoformat(info["start_time"])
                info["duration_s"] = round((now - start).total_seconds(), 3)
            except (TypeError, ValueError):
                pass
        else:
            info.pop("end_time", None)
            info.pop("duration_s", None)
        info.update(_plain(extra))
        self.write_json(STATUS_FILE, info)
        return info

    def read_status(self) -> dict[str, Any]:
        try:
            return self.read_json(STATUS_FILE)
        except FileNotFoundError:
            return {}


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def _parse_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


_PACKAGES = {
    "dlrun": ("dlrun",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
    "keras": ("keras",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
    "pydantic": ("pydantic",),
}


def environment_info() -> dict[str, Any]:
    """Python, platform, host and package versions (read from metadata, nothing imported)."""
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for label, dists in _PACKAGES.items():
        packages[label] = None
        for dist in dists:
            try:
                packages[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "packages": packages,
    }


CHECKPOINT_DIR = "checkpoint"  # a job's resume state (dlrun.training.checkpoints)
MODEL_FILE = "model.keras"  # a job's trained model
# Kept in the run directory, not copied to MLflow: the resume state (large, superseded each epoch).
NOT_ARTIFACTS = {CHECKPOINT_DIR}


def job_dirs(run_path: Path) -> list[Path]:
    """The folders of a run's jobs: the run itself, its K-fold folds, its refit (``final``)."""
    run_path = Path(run_path)
    folds = sorted(p for p in (run_path / "folds").glob("*") if p.is_dir())
    return [run_path, *folds, *([run_path / "final"] if (run_path / "final").is_dir() else [])]


def remove_checkpoints(run_path: Path) -> int:
    """Remove the resume state of every job of a run; the bytes freed."""
    import shutil

    freed = 0
    for job in job_dirs(run_path):
        folder = job / CHECKPOINT_DIR
        if folder.is_dir():
            freed += folder_size(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a file's own size), links not followed."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def log_run_files(tracked, folder: Path, skip: set[str] = frozenset()) -> None:
    """Log a run directory's files as ``tracked``'s artifacts, leaving out ``skip`` (top-level
    names), every job's checkpoint, hidden files (the run lock, half-written temporaries) and a
    ``model.keras`` once the run logged it as its MLflow model (``tracked.logged_model``): that
    logged model is the run's model in MLflow, and a second copy would only double the disk."""
    leave_out = set(NOT_ARTIFACTS) | ({MODEL_FILE} if getattr(tracked, "logged_model", None) else set())
    _log_tree(tracked, Path(folder), None, set(skip), leave_out)


def _log_tree(tracked, folder: Path, artifact_path: str | None, skip: set[str], leave_out: set[str]) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.name in skip or entry.name in leave_out or entry.name.startswith("."):
            continue
        where = entry.name if artifact_path is None else f"{artifact_path}/{entry.name}"
        if not entry.is_dir():
            tracked.log_artifact(entry, artifact_path)
        elif any(p.name in leave_out or p.name.startswith(".") for p in entry.rglob("*")):
            _log_tree(tracked, entry, where, set(), leave_out)  # file by file around what stays out
        else:
            tracked.log_artifacts(entry, where)  # one call for a folder with nothing to leave out
