"""``dlrun gc``: old runs' checkpoints and models go, their records stay, RUNNING runs are untouched."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402
from test_cli import dlrun  # noqa: E402

RECORDS = ("run.json", "recipe.yaml", "history.csv", "metrics.json", "learning_curves.png", "splits.json")


def _train(tmp_path: Path, *sets: str) -> Path:
    recipe = tmp_path / "iris_gc.yaml"
    recipe.write_text(iris_recipe("iris_gc", epochs=1))
    args = [a for s in sets for a in ("--set", s)]
    result = dlrun("train", str(recipe), "-o", "out", "--json", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["run_dir"])


def _logged_models(run_dir: Path) -> list:
    from mlflow import MlflowClient

    status = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(status["tracking_uri"])
    run = client.get_run(status["mlflow_run_id"])
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")


def test_gc_prunes_old_runs_heavy_files_and_keeps_their_records(tmp_path):
    old = _train(tmp_path, "fit.keep_checkpoint=true")
    new = _train(tmp_path)
    # A run a killed process left RUNNING (stale): --resume may continue it, so gc leaves it whole.
    stale = old.with_name("20000101-000000-abcdef")
    shutil.copytree(old, stale)
    status = json.loads((stale / "run.json").read_text())
    (stale / "run.json").write_text(json.dumps({**status, "status": "RUNNING", "mlflow_run_id": None}))
    old_model = (old / "model.keras").stat().st_size

    dry = dlrun("gc", "-o", "out", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert [p["run_dir"] for p in plan["pruned"]] == [str(old)]
    assert sorted(plan["pruned"][0]["files"]) == ["checkpoint", "model.keras"]
    assert plan["pruned"][0]["bytes"] > old_model and len(plan["pruned"][0]["mlflow_models"]) == 1
    assert {k["run_dir"]: k["why"] for k in plan["kept"]}[str(stale)].startswith("stale")
    assert (old / "model.keras").is_file() and (old / "checkpoint").is_dir()  # a dry run removes nothing

    done = dlrun("gc", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{old} (FINISHED): " in done.stdout and "freed " in done.stdout and "MB from 1 run" in done.stdout
    assert not (old / "model.keras").exists() and not (old / "checkpoint").exists()
    assert all((old / name).is_file() for name in RECORDS)
    assert json.loads((old / "run.json").read_text())["pruned"][0]["files"] == ["checkpoint", "model.keras"]
    assert (new / "model.keras").is_file() and _logged_models(new)  # the newest run stays whole
    assert (stale / "model.keras").is_file() and (stale / "checkpoint").is_dir()
    assert _logged_models(old) == []  # its MLflow model went too; the MLflow run keeps its metrics

    rows = tmp_path / "rows.jsonl"
    rows.write_text("[5.1, 3.5, 1.4, 0.2]\n")
    predict = dlrun("predict", str(old), str(rows), "-o", "p.csv", "--output-root", "out", cwd=tmp_path)
    assert predict.returncode == 2 and "dlrun gc removed it" in predict.stderr, predict.stderr

    again = dlrun("gc", "-o", "out", "--keep", "0", "--older-than", "1d", cwd=tmp_path)
    assert again.returncode == 0 and "from 0 runs" in again.stdout, again.stdout + again.stderr
    assert (new / "model.keras").is_file()


def test_gc_says_what_it_needs(tmp_path):
    result = dlrun("gc", "-o", "out", "--older-than", "soon", cwd=tmp_path)
    assert result.returncode == 2 and "12h, 7d or 2w" in result.stderr
