"""What a run leaves on disk: each thing stored once, a finished run's resume state removed.

Before: a hold-out run kept its model three times (run folder, MLflow artifact copy, MLflow
logged model) and its checkpoint after it finished; a K-fold refit uploaded final/ (model and
checkpoint) twice more. The CLI is run as a user types it and the store read back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402
from test_cli import dlrun  # noqa: E402


def _train(tmp_path: Path, *args: str) -> dict:
    recipe = tmp_path / "iris_disk.yaml"
    recipe.write_text(iris_recipe("iris_disk", epochs=2))
    result = dlrun(*args, str(recipe), "-o", str(tmp_path / "out"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _artifacts(summary: dict, run_id: str | None = None) -> set[str]:
    """Every artifact path of the run, folders walked."""
    from mlflow import MlflowClient

    client, found = MlflowClient(summary["tracking_uri"]), set()

    def walk(path):
        for entry in client.list_artifacts(run_id or summary["run_id"], path):
            walk(entry.path) if entry.is_dir else found.add(entry.path)

    walk(None)
    return found


def _keras_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.keras"))


def test_a_finished_holdout_run_stores_its_model_twice_and_no_checkpoint(tmp_path):
    summary = _train(tmp_path, "train")
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "model.keras").is_file()  # dlrun predict/export/evaluate read it
    assert not (run_dir / "checkpoint").exists()  # a FINISHED run is never resumed
    logged = _artifacts(summary)
    assert "model.keras" not in logged and not any("checkpoint" in p for p in logged)
    assert {"history.csv", "run.json", "recipe.yaml", "metrics.json"} <= logged
    from mlflow import MlflowClient

    models = MlflowClient(summary["tracking_uri"]).search_logged_models(
        experiment_ids=[MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"]).info.experiment_id])
    assert [m.source_run_id for m in models] == [summary["run_id"]]  # the MLflow copy: the logged model
    keras_files = _keras_files(tmp_path / "out")
    assert len(keras_files) == 2, keras_files  # the run folder's and the logged model's


def test_a_kfold_refit_uploads_final_once_without_its_model_or_checkpoint(tmp_path):
    summary = _train(tmp_path, "kfold", "--k", "2", "--refit")
    run_dir = Path(summary["run_dir"])
    assert not list(run_dir.rglob("checkpoint")), "every job's checkpoint goes when the run finishes"
    logged = _artifacts(summary)
    final = sorted(p for p in logged if p.startswith("final/"))
    assert "final/history.csv" in final and "final/model.keras" not in final
    assert not any("checkpoint" in p for p in logged)
    assert not any(p.startswith("folds/") for p in logged)  # fold files live on the fold runs
    # 2 folds + the refit: each model once in the run folder and once as an MLflow logged model.
    assert len(_keras_files(tmp_path / "out")) == 6


def test_keep_checkpoint_keeps_the_resume_state(tmp_path):
    summary = _train(tmp_path, "train", "--set", "fit.keep_checkpoint=true")
    state = Path(summary["run_dir"]) / "checkpoint" / "state.json"
    assert json.loads(state.read_text())["epoch"] == 2
    assert not any("checkpoint" in p for p in _artifacts(summary))  # kept here, never uploaded
