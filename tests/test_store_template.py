"""A new embedded store is a copy of a cached empty one: MLflow's migrations run once per MLflow
version, not once per output root, and the copy works as a store MLflow made itself."""

from __future__ import annotations

import sqlite3

import pytest


@pytest.fixture
def migrations(monkeypatch, tmp_path):
    """How many times MLflow builds its schema from nothing, with the cache in ``tmp_path``."""
    import mlflow.store.db.utils as db_utils

    monkeypatch.setenv("DLRUN_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    original = db_utils._initialize_tables

    def counted(engine):
        calls.append(str(engine.url))
        return original(engine)

    monkeypatch.setattr(db_utils, "_initialize_tables", counted)
    return calls


def test_new_stores_are_copied_from_one_empty_store(tmp_path, migrations):
    from dlrun.track.mlflow_store import Tracker

    first = Tracker.from_output_root(tmp_path / "a", "exp")
    assert len(migrations) == 1
    for name in ("b", "c"):
        tracker = Tracker.from_output_root(tmp_path / name, "exp")
        run = tracker.start_run("r")
        run.log_epoch({"loss": 0.5}, step=1)
        run.end()
        assert [m.step for m in tracker.client.get_metric_history(run.run_id, "loss")] == [1]
        assert tracker.client.get_experiment_by_name("Default") is not None  # MLflow's own, as always
    assert len(migrations) == 1  # b and c: copies, no migration
    assert first.experiment_id == tracker.experiment_id
    (template,) = (tmp_path / "cache").glob("mlflow-*-empty.db")
    with sqlite3.connect(template) as db:  # the copied store holds no experiment, no run
        assert db.execute("select count(*) from experiments").fetchone() == (0,)
