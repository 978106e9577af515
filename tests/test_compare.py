"""`dlrun compare` on real recorded runs (tiny iris trainings), and the chapter 4.4 IMDB recipes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.compare import compare
from dlrun.track.runs import resolve_run
from dlrun.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DLRUN = Path(sys.executable).with_name("dlrun")  # the console script of the interpreter running the tests
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

IRIS = iris_recipe("iris_cmp", shuffle=True, extra="tracking:\n  log_model: false\n")
IRIS_SMALL = """\
name: iris_small
extends: iris_cmp.yaml
model:
  layers:
    - Dense: {units: 4, activation: relu, kernel_regularizer: {L2: {l2: 0.001}}}
    - Dense: {units: 3, activation: softmax}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs under one output root: two hold-out recipes and a 2-fold run."""
    base = tmp_path_factory.mktemp("compare")
    (base / "iris_cmp.yaml").write_text(IRIS)
    (base / "iris_small.yaml").write_text(IRIS_SMALL)
    root = base / "out"
    ref = dlrun.train(base / "iris_cmp.yaml", output_root=root)
    small = dlrun.train(base / "iris_small.yaml", output_root=root)
    cv = dlrun.kfold(base / "iris_cmp.yaml", ["fit.epochs=2", "tracking.experiment=iris_cv"], k=2,
                     output_root=root)
    for summary in (ref, small, cv):
        assert summary.status == "FINISHED"
    return {"base": base, "root": root, "ref": ref, "small": small, "cv": cv}


def _history_csv(run_dir: str) -> dict[str, list[float]]:
    with open(Path(run_dir) / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


# --------------------------------------------------------------------------- resolving


def test_runs_resolve_by_directory_run_id_recipe_file_and_name(runs):
    root, ref, small = runs["root"], runs["ref"], runs["small"]
    assert resolve_run(ref.run_dir, root) == Path(ref.run_dir)
    assert resolve_run(ref.run_id, root) == Path(ref.run_dir)
    assert resolve_run(ref.run_id[:8], root) == Path(ref.run_dir)  # a run id prefix
    assert resolve_run(Path(ref.run_dir).name, root) == Path(ref.run_dir)  # the run folder's name
    assert resolve_run(str(runs["base"] / "iris_small.yaml"), root) == Path(small.run_dir)
    assert resolve_run("iris_small", root) == Path(small.run_dir)
    assert resolve_run("iris_cv", root) == Path(runs["cv"].run_dir)  # tracking.experiment
    assert resolve_run(str(Path(ref.run_dir).parent), root) == Path(ref.run_dir)  # an experiment folder
    fold = Path(runs["cv"].run_dir) / "folds" / "fold_1"
    fold_id = json.loads((fold / "run.json").read_text())["mlflow_run_id"]
    assert resolve_run(fold_id, root) == fold  # a K-fold run's fold, by its nested MLflow run id


def test_recipe_name_means_the_latest_finished_run(runs):
    experiment = Path(runs["ref"].run_dir).parent
    newer = experiment / "29991231-235959-abcdef"  # sorts last: a run still going, or one that failed
    newer.mkdir()
    try:
        for status in ("RUNNING", "FAILED"):
            (newer / "run.json").write_text(json.dumps({"status": status}))
            assert resolve_run("iris_cmp", runs["root"]) == Path(runs["ref"].run_dir)
        (newer / "run.json").write_text(json.dumps({"status": "FINISHED"}))
        assert resolve_run("iris_cmp", runs["root"]) == newer
    finally:
        (newer / "run.json").unlink()
        newer.rmdir()


def test_run_id_unknown_to_run_directories_is_looked_up_in_mlflow(runs, monkeypatch):
    import dlrun.track.runs as runs_module

    monkeypatch.setattr(runs_module, "all_run_dirs", lambda root: [])  # only the store knows it
    assert resolve_run(runs["small"].run_id, runs["root"]) == Path(runs["small"].run_dir)
    with pytest.raises(UsageError, match="unknown run 'ffffffffffffffffffffffffffffffff'"):
        resolve_run("f" * 32, runs["root"])


# --------------------------------------------------------------------------- table and plot


def test_table_values_match_history_csv(runs, tmp_path):
    ref, small = runs["ref"], runs["small"]
    result = compare([ref.run_dir, "iris_small"], output_root=runs["root"], output=tmp_path / "c.png")
    assert [r["label"] for r in result.rows] == ["iris_cmp", "iris_small"]
    for row, summary in zip(result.rows, (ref, small)):
        history = _history_csv(summary.run_dir)
        curve = history["val_loss"]
        assert row["curve"] == pytest.approx(curve)
        assert row["final"] == pytest.approx(curve[-1])
        assert row["best"] == pytest.approx(min(curve))
        assert row["best_epoch"] == int(history["epoch"][int(np.argmin(curve))])
        assert row["epochs"] == 3 and row["protocol"] == "holdout" and row["status"] == "FINISHED"
        assert row["run_id"] == summary.run_id
        assert row["test"] == pytest.approx({k: v for k, v in summary.metrics.items() if k.startswith("test_")})
        assert set(row["test"]) == {"test_loss", "test_accuracy"}

    accuracy = compare([ref.run_dir], metric="val_accuracy", output_root=runs["root"], plot=False)
    curve = _history_csv(ref.run_dir)["val_accuracy"]
    assert accuracy.to_dict()["direction"] == "max"
    assert accuracy.rows[0]["best"] == pytest.approx(max(curve))
    assert accuracy.rows[0]["best_epoch"] == int(np.argmax(curve)) + 1


def test_kfold_run_compares_its_fold_averaged_curve(runs):
    result = compare([runs["cv"].run_dir, runs["ref"].run_dir], output_root=runs["root"], plot=False)
    kfold_row = result.rows[0]
    mean = json.loads((Path(runs["cv"].run_dir) / "kfold_curves.json").read_text())["mean"]["val_loss"]
    assert kfold_row["protocol"] == "kfold" and kfold_row["epochs"] == 2
    assert kfold_row["curve"] == pytest.approx(mean)
    assert kfold_row["label"] == "iris_cmp (k-fold mean)"
    assert result.rows[1]["label"] == "iris_cmp"


def test_equal_labels_are_disambiguated(runs):
    result = compare([runs["ref"].run_dir, runs["ref"].run_id], output_root=runs["root"], plot=False)
    short = Path(runs["ref"].run_dir).name.split("-")[2]
    assert [r["label"] for r in result.rows] == [f"iris_cmp ({short})", f"iris_cmp ({short}) #2"]
    fold = compare([str(Path(runs["cv"].run_dir) / "folds" / "fold_1")], output_root=runs["root"], plot=False)
    assert fold.rows[0]["label"] == "iris_cmp fold_1"


def test_overlay_png_default_and_explicit_path(runs, tmp_path):
    result = compare(["iris_cmp", "iris_small"], smooth=0.9, output_root=runs["root"])
    assert result.plot.parent == runs["root"].absolute() / "compare"
    assert result.plot.name.startswith("val_loss-iris_cmp-vs-iris_small-")
    assert result.plot.read_bytes()[:8] == PNG_MAGIC
    again = compare(["iris_cmp", "iris_small"], smooth=0.9, output_root=runs["root"])
    assert again.plot == result.plot  # the same comparison rewrites its own figure
    other = compare(["iris_cmp", "iris_small"], output_root=runs["root"])
    assert other.plot != result.plot  # unsmoothed is another figure

    explicit = compare(["iris_cmp"], metric="loss", output=tmp_path / "sub" / "loss.png", output_root=runs["root"])
    assert explicit.plot == tmp_path / "sub" / "loss.png"
    assert explicit.plot.read_bytes()[:8] == PNG_MAGIC


def _book_smooth_curve(points, factor=0.9):
    """Listing 3.30 of the book, verbatim."""
    smoothed_points = []
    for point in points:
        if smoothed_points:
            previous = smoothed_points[-1]
            smoothed_points.append(previous * factor + point * (1 - factor))
        else:
            smoothed_points.append(point)
    return smoothed_points


def test_smoothing_draws_the_books_moving_average():
    from dlrun.track.compare_plot import overlay_figure

    curves = {"reference": [0.6, 0.4, 0.3, 0.35, 0.5, 0.7], "smaller": [0.69, 0.6, 0.5, 0.42, 0.38, 0.37]}
    fig = overlay_figure(curves, "val_loss", smooth=0.9)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["reference", "smaller"]
    for line, values in zip(lines, curves.values()):
        assert list(line.get_xdata()) == [1, 2, 3, 4, 5, 6]
        assert list(line.get_ydata()) == pytest.approx(_book_smooth_curve(values, 0.9))
    assert lines[0].get_marker() == "+" and lines[1].get_marker() == "o"  # the book's markers
    plain = overlay_figure(curves, "val_loss").axes[0].get_lines()
    assert list(plain[0].get_ydata()) == pytest.approx(curves["reference"])


def test_terminal_table_is_a_rich_table(runs, capsys):
    from dlrun.compare import print_table

    print_table(compare(["iris_cmp", "iris_small"], output_root=runs["root"], plot=False), tty=True)
    out = capsys.readouterr().out
    assert "val_loss (lower is better)" in out and "iris_" in out and "━" in out


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem(runs, tmp_path):
    root = runs["root"]
    with pytest.raises(UsageError, match=r"unknown run 'iris_smal'.*experiments there: iris_cmp, iris_cv, "
                                         r"iris_small\) — did you mean 'iris_small'\?"):
        compare(["iris_smal"], output_root=root)
    with pytest.raises(UsageError, match=r"has no 'val_los' curve — did you mean 'val_loss'\? \(it records: "
                                         r"accuracy, loss, val_accuracy, val_loss\)"):
        compare(["iris_cmp"], metric="val_los", output_root=root)
    with pytest.raises(UsageError, match=r"it records: accuracy, loss, val_accuracy, val_loss"):
        compare(["iris_cmp"], metric="val_mae", output_root=root)

    empty = tmp_path / "runs" / "broken" / "20250101-000000-000000"
    empty.mkdir(parents=True)
    (empty / "run.json").write_text(json.dumps({"status": "FAILED"}))
    with pytest.raises(UsageError, match=r"\(FAILED\) recorded no epochs"):
        compare([str(empty)], output_root=tmp_path)
    with pytest.raises(UsageError, match="experiment 'broken' has no FINISHED run"):
        compare(["broken"], output_root=tmp_path)
    with pytest.raises(UsageError, match="no such recipe file"):
        compare([str(tmp_path / "missing.yaml")], output_root=root)
    with pytest.raises(UsageError, match=r"iris_cmp.yaml' has no runs yet: no folder .*runs/iris_cmp"):
        compare([str(runs["base"] / "iris_cmp.yaml")], output_root=tmp_path)
    with pytest.raises(UsageError, match=r"--smooth must be in \[0, 1\)"):
        compare(["iris_cmp"], smooth=1.5, output_root=root)
    with pytest.raises(UsageError, match="--output must be a .png"):
        compare(["iris_cmp"], output=tmp_path / "plot.svg", output_root=root)
    with pytest.raises(UsageError, match="not a run directory"):
        compare([str(tmp_path / "runs")], output_root=root)


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DLRUN), "compare", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_json_plain_table_and_exit_codes(runs, tmp_path):
    root = str(runs["root"])
    out = _cli(runs["ref"].run_dir, runs["small"].run_id, "--smooth", "0.9", "--output-root", root,
               "--output", str(tmp_path / "cli.png"), "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["status"] == "OK" and record["metric"] == "val_loss" and record["smooth"] == 0.9
    assert [r["label"] for r in record["runs"]] == ["iris_cmp", "iris_small"]
    assert record["runs"][1]["final"] == pytest.approx(_history_csv(runs["small"].run_dir)["val_loss"][-1])
    assert Path(record["plot"]).read_bytes()[:8] == PNG_MAGIC

    plain = _cli("iris_cmp", "iris_cv", "--metric", "val_accuracy", "--output-root", root)
    assert plain.returncode == 0, plain.stderr
    header, first, second, plot_line = plain.stdout.splitlines()
    assert header.split()[:4] == ["run", "epochs", "final", "val_accuracy"]
    assert first.startswith("iris_cmp ") and second.startswith("iris_cmp (k-fold mean)")
    assert plot_line.startswith("plot: ") and Path(plot_line[6:]).is_file()

    assert _cli("iris_cmp", "--output-root", root, "--quiet").stdout == ""

    bad = _cli("iris_cmp", "--metric", "val_acc", "--output-root", root, "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["exit_code"] == 2 and "did you mean 'val_accuracy'" in bad.stderr
    unknown = _cli("no_such_run", "--output-root", root)
    assert unknown.returncode == 2 and "unknown run 'no_such_run'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


PROBE = """
import sys
from typer.testing import CliRunner
from dlrun.cli import app
result = CliRunner().invoke(app, ["compare", *sys.argv[1:]])
assert result.exit_code == 0, result.output
print("HEAVY:" + ",".join(m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules))
"""


def test_compare_imports_no_tensorflow_nor_mlflow(runs):
    args = [runs["ref"].run_dir, "iris_small", runs["cv"].run_id, "--output-root", str(runs["root"])]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout, out.stdout


# --------------------------------------------------------------------------- chapter 4.4 recipes

CH4_FILES = ["imdb_dense.yaml", "imdb_smaller.yaml", "imdb_bigger.yaml", "imdb_l2.yaml", "imdb_dropout.yaml"]
CH4 = [name.removesuffix(".yaml") for name in CH4_FILES]


def test_chapter4_recipes_build_the_books_networks(recipes_dir):
    from dlrun.model.builder import build_model
    from dlrun.recipe.loading import load_recipe

    expected = {  # hidden units, L2 factor, dropout layers
        "imdb_dense": ([16, 16], None, 0), "imdb_smaller": ([4, 4], None, 0), "imdb_bigger": ([512, 512], None, 0),
        "imdb_l2": ([16, 16], 0.001, 0), "imdb_dropout": ([16, 16], None, 2),
    }
    for name, (units, l2, dropouts) in expected.items():
        recipe = load_recipe(recipes_dir / f"{name}.yaml").recipe
        assert recipe.name == name
        assert (recipe.fit.epochs, recipe.fit.batch_size) == (20, 512)
        assert recipe.data.split.validation.first == 10000 and recipe.compile.optimizer.name == "rmsprop"
        model = build_model(recipe.model, (10000,), name=name)
        dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
        assert [d.units for d in dense] == [*units, 1]
        for d in dense[:2]:
            reg = d.kernel_regularizer
            assert (reg is None) if l2 is None else float(reg.get_config()["l2"]) == pytest.approx(l2)
        drops = [layer for layer in model.layers if type(layer).__name__ == "Dropout"]
        assert len(drops) == dropouts and all(d.rate == 0.5 for d in drops)


def test_chapter4_recipes_train_and_compare_on_generated_sequences(recipes_dir, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "sequences.npz"
    np.savez(data, x=rng.integers(1, 10000, size=(48, 20)), y=rng.integers(0, 2, size=48),
             x_test=rng.integers(1, 10000, size=(16, 20)), y_test=rng.integers(0, 2, size=16))
    overrides = [
        f"data={{source: npz, path: {data}, x_test: x_test, y_test: y_test, "
        "split: {test: dataset, validation: {first: 16}}}",
        "fit.epochs=1", "fit.batch_size=16", "tracking.log_model=false",
    ]
    root = tmp_path / "out"
    for name, file in zip(CH4, CH4_FILES):
        summary = dlrun.train(recipes_dir / file, overrides, output_root=root)
        assert summary.status == "FINISHED" and summary.experiment == name
        assert "test_accuracy" in summary.metrics
    result = compare(CH4, output_root=root)
    assert [r["label"] for r in result.rows] == CH4
    assert all(r["epochs"] == 1 and r["final"] is not None for r in result.rows)
    assert result.plot.read_bytes()[:8] == PNG_MAGIC
