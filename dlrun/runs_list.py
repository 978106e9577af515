"""``dlrun runs``: the runs under an output root, newest first, as their directories and the
tracking store record them — and where the two disagree.

A run recorded RUNNING that no live process holds (killed with SIGKILL, out of memory, its host
lost) is *stale*: shown as such, and ``--mark-stale`` ends it KILLED in ``run.json`` and in
MLflow (it stays resumable). A run started on another host is not judged from here.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrun import tables
from dlrun.errors import UsageError, did_you_mean
from dlrun.track.mlflow_ui import MAIN_METRIC_FAMILIES
from dlrun.track.runs import RunReader, all_run_dirs

STALE = "STALE"
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", STALE)
STALE_REASON = "the process running it died (SIGKILL, out of memory or a lost host): marked by dlrun runs --mark-stale"


@dataclass
class RunRow:
    run: str  # the run folder's name
    experiment: str
    recipe: str | None
    protocol: str
    status: str  # run.json's, or STALE
    start: str | None
    duration_s: float | None
    metrics: dict[str, float]
    run_dir: str
    mlflow_run_id: str | None
    host: str | None = None
    mlflow_status: str | None = None
    disagreement: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunsListing:
    rows: list[RunRow]
    total: int  # before --limit
    marked: list[str] = field(default_factory=list)
    store_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.rows], "total": self.total, "marked_stale": self.marked,
                "store_errors": self.store_errors}


def main_metrics(metrics: dict[str, Any], most: int = 3) -> dict[str, float]:
    """What a user sorts runs by: test metrics, else K-fold means, else final validation metrics."""
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for prefix, suffix in MAIN_METRIC_FAMILIES:
        chosen = {k: v for k, v in numbers.items() if k.startswith(prefix) and k.endswith(suffix)}
        if chosen:
            return dict(sorted(chosen.items(), key=lambda kv: (not kv[0].endswith("loss"), kv[0]))[:most])
    return {}


def _row(run: RunReader, this_host: str) -> RunRow:
    status = run.status
    state = status.get("status") or "UNKNOWN"
    host = run.environment().get("hostname")
    if state == "RUNNING" and (host in (None, this_host)) and run.holder() is None:
        state = STALE
    try:
        recipe, protocol = run.resolved.get("name"), run.protocol
    except UsageError:
        recipe, protocol = None, "?"
    return RunRow(run.path.name, run.path.parent.name, recipe, protocol, state, status.get("start_time"),
                  status.get("duration_s"), main_metrics(status.get("metrics") or {}), str(run.path),
                  run.run_id, host)


def list_runs(output_root: Path | str = "artifacts", *, recipe: str | None = None, experiment: str | None = None,
              status: str | None = None, limit: int | None = 20, store: bool = True,
              mark_stale: bool = False) -> RunsListing:
    """The runs under ``output_root``, newest first, filtered; MLflow's view beside each (``store``)."""
    root = Path(output_root).expanduser().absolute()
    if status is not None and status.upper() not in STATUSES:
        raise UsageError(f"--status {status}: choose one of {', '.join(STATUSES)}")
    dirs = sorted(all_run_dirs(root), key=lambda p: p.name, reverse=True)
    if experiment is not None:
        known = sorted({p.parent.name for p in dirs})
        if experiment not in known:
            raise UsageError(f"--experiment {experiment}: no runs of it under {root}{did_you_mean(experiment, known)}")
        dirs = [p for p in dirs if p.parent.name == experiment]
    this_host = socket.gethostname()
    rows = [_row(RunReader(p), this_host) for p in dirs]
    if recipe is not None:
        name = _recipe_name(recipe)
        rows = [r for r in rows if r.recipe == name]
    if status is not None:
        rows = [r for r in rows if r.status == status.upper()]
    total = len(rows)
    rows = rows[:limit] if limit else rows
    listing = RunsListing(rows, total)
    if store:
        _compare_with_store(listing)
    if mark_stale:
        for row in rows:
            if row.status == STALE:
                _mark_killed(row)
                listing.marked.append(row.run_dir)
    return listing


def _recipe_name(text: str) -> str:
    """A recipe given as a name, or as a file (its ``name``)."""
    path = Path(text).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        return text
    from dlrun.errors import RecipeError
    from dlrun.recipe.loading import load_recipe

    try:
        return load_recipe(path, require_data=False).recipe.name
    except RecipeError as exc:
        raise UsageError(f"--recipe {text}: cannot read the recipe:\n{exc}") from None


def _compare_with_store(listing: RunsListing) -> None:
    """Each run's status in its tracking store, and where it differs from the run directory's."""
    from dlrun.track.store_status import statuses

    by_uri: dict[str, list[RunRow]] = {}
    for row in listing.rows:
        uri = RunReader(Path(row.run_dir)).status.get("tracking_uri")
        if row.mlflow_run_id and uri:
            by_uri.setdefault(uri, []).append(row)
    for uri, rows in by_uri.items():
        found, error = statuses(uri, [r.mlflow_run_id for r in rows])
        if error:
            listing.store_errors.append(f"{uri}: {error}")
            continue
        for row in rows:
            row.mlflow_status = found.get(row.mlflow_run_id, "MISSING")
            disk = "RUNNING" if row.status == STALE else row.status
            if row.mlflow_status != disk:
                row.disagreement = f"{disk.lower()} on disk, {row.mlflow_status.lower()} in MLflow"
                if row.mlflow_status == "MISSING":
                    row.disagreement = "not in its tracking store (kept offline? dlrun sync uploads it)"


def _mark_killed(row: RunRow) -> None:
    from dlrun.track.rundir import RunDir

    run = RunDir(Path(row.run_dir))
    run.write_status("KILLED", error=STALE_REASON)
    row.status = "KILLED"
    uri = run.read_status().get("tracking_uri")
    if row.mlflow_run_id and uri:
        from dlrun.track.store_status import end_run

        if end_run(uri, row.mlflow_run_id, "KILLED"):
            row.mlflow_status, row.disagreement = "KILLED", None


# --------------------------------------------------------------------------- table


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def table_cells(listing: RunsListing) -> tuple[list[str], list[list[str]]]:
    header = ["run", "recipe", "protocol", "status", "start (UTC)", "duration", "metrics"]
    rows = []
    for r in listing.rows:
        status = r.status + (f" ({r.disagreement})" if r.disagreement else "")
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()) or "—"
        start = (r.start or "—").replace("T", " ")[:19]
        rows.append([r.run, r.recipe or "?", r.protocol, status, start, _fmt_duration(r.duration_s), metrics])
    return header, rows


def print_listing(listing: RunsListing, tty: bool) -> None:
    if not listing.rows:
        print("no runs")
        return
    header, rows = table_cells(listing)
    styles = [{"style": "red" if r.status in (STALE, "FAILED") else "yellow" if r.disagreement else ""}
              for r in listing.rows]
    shown = f"{len(listing.rows)} of {listing.total}" if listing.total > len(listing.rows) else str(listing.total)
    tables.render_table(header, rows, title=f"runs ({shown}, newest first)", tty=tty, row_styles=styles)
