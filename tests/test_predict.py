"""dlrun predict and dlrun evaluate, run as a user types them, on runs trained here.

Each check reads the run's model and the preprocessing it fitted back from the run directory:
the numbers must be the run's own (its test accuracy from its test rows written out as a file).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]


def dlrun(*args, cwd, stdin: str | None = None, check: int | None = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([*DLRUN, *map(str, args)], capture_output=True, text=True, cwd=cwd, input=stdin,
                         timeout=600)
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out


def train(cwd: Path, recipe: str | Path, *extra) -> dict:
    out = dlrun("train", recipe, "-o", "out", "--json", *extra, cwd=cwd)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- quickstart (embedded MNIST)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The README's quickstart run (fewer rows, one epoch) and its test rows written out as files."""
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split
    from dlrun.recipe.loading import load_recipe

    cwd = tmp_path_factory.mktemp("quickstart")
    overrides = ["data.limit=1500", "fit.epochs=1"]
    summary = train(cwd, ROOT / "recipes" / "quickstart.yaml", *[a for o in overrides for a in ("--set", o)])
    loaded = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides)
    recipe = loaded.recipe
    ds = apply_test_split(load_data(recipe.data, loaded.base_dir, recipe.seed), recipe.data.split, recipe.seed)
    np.savez(cwd / "test.npz", x=ds.x_test)
    np.savez(cwd / "labelled.npz", x=ds.x_test, y=ds.y_test)
    np.savetxt(cwd / "test.csv", ds.x_test.reshape(len(ds.x_test), -1), delimiter=",", fmt="%d")
    (cwd / "test.jsonl").write_text("".join(json.dumps(x.tolist()) + "\n" for x in ds.x_test[:7]))
    return {"cwd": cwd, "summary": summary, "y": ds.y_test, "x": ds.x_test}


def test_predict_reproduces_the_runs_test_accuracy_from_its_test_rows(quickstart):
    cwd, summary = quickstart["cwd"], quickstart["summary"]
    out = dlrun("predict", summary["run_dir"], "test.npz", "-o", "pred.csv", "--top-k", "3", cwd=cwd)
    assert "predicted 300 rows" in out.stderr
    import pandas as pd

    table = pd.read_csv(cwd / "pred.csv")
    assert list(table.columns) == ["row", "class", "probability", "class_2", "probability_2", "class_3",
                                   "probability_3"]
    accuracy = float(np.mean(table["class"].to_numpy() == quickstart["y"]))
    assert accuracy == pytest.approx(summary["metrics"]["test_accuracy"], abs=1e-6)
    assert (table["probability"] >= table["probability_2"]).all() and (table["probability_2"] >= table["probability_3"]).all()


def test_every_input_and_output_form_gives_the_same_predictions(quickstart):
    cwd = quickstart["cwd"]
    # By recipe name (its latest run), from a CSV of flattened pixels, to JSON lines.
    dlrun("predict", "quickstart", "test.csv", "-o", "pred.jsonl", "--output-root", "out", cwd=cwd)
    dlrun("predict", "quickstart", "test.npz", "-o", "pred.npz", "--output-root", "out", cwd=cwd)
    stdin = dlrun("predict", "quickstart", "-", "-o", "-", "--output-root", "out", cwd=cwd,
                  stdin=(cwd / "test.jsonl").read_text())
    lines = [json.loads(line) for line in (cwd / "pred.jsonl").read_text().splitlines()]
    piped = [json.loads(line) for line in stdin.stdout.splitlines()]
    arrays = np.load(cwd / "pred.npz")
    assert len(lines) == len(arrays["ids"]) == 300 and len(piped) == 7
    assert arrays["predictions"].shape == (300, 10)
    np.testing.assert_allclose([r["probability"] for r in lines], arrays["probability"], atol=1e-6)
    np.testing.assert_allclose([r["probability"] for r in piped], arrays["probability"][:7], atol=1e-5)
    assert [r["class"] for r in piped] == [int(c) for c in arrays["class"][:7]]
    assert [r["line"] for r in piped] == list(range(1, 8))


def test_evaluate_scores_another_data_set_and_records_it_in_mlflow(quickstart):
    cwd, summary = quickstart["cwd"], quickstart["summary"]
    result = json.loads(dlrun("evaluate", "quickstart", "labelled.npz", "-o", "out", "--json", cwd=cwd).stdout)
    assert result["rows"] == 300
    assert result["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test_accuracy"], abs=1e-6)
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["test_loss"], rel=1e-4)
    from mlflow import MlflowClient

    run = MlflowClient(summary["tracking_uri"]).get_run(result["mlflow_run_id"])
    assert run.data.tags["dlrun.evaluation_of"] == summary["run_id"]
    assert run.data.metrics["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert json.loads((Path(result["evaluation_dir"]) / "evaluation.json").read_text())["rows"] == 300


def test_an_input_that_does_not_fit_exits_2_and_writes_nothing(quickstart):
    cwd = quickstart["cwd"]
    np.savez(cwd / "small.npz", x=quickstart["x"][:, :27, :27])
    out = dlrun("predict", "quickstart", "small.npz", "-o", "bad.csv", "--output-root", "out", cwd=cwd, check=2)
    assert "shape [27, 27]" in out.stderr and "[28, 28]" in out.stderr and "Traceback" not in out.stderr
    np.savetxt(cwd / "narrow.csv", quickstart["x"].reshape(300, -1)[:, :700], delimiter=",", fmt="%d")
    out = dlrun("predict", "quickstart", "narrow.csv", "-o", "bad.csv", "--output-root", "out", cwd=cwd, check=2)
    assert "700" in out.stderr
    assert not list(cwd.glob("*bad.csv*"))  # not even a temporary file
    (cwd / "taken.csv").write_text("mine\n")
    out = dlrun("predict", "quickstart", "test.npz", "-o", "taken.csv", "--output-root", "out", cwd=cwd, check=2)
    assert "--force" in out.stderr and (cwd / "taken.csv").read_text() == "mine\n"


def test_a_damaged_model_file_is_named_as_such_and_nothing_is_written(quickstart):
    import shutil
    import zipfile

    cwd = quickstart["cwd"]
    run = cwd / "damaged_run"
    shutil.copytree(quickstart["summary"]["run_dir"], run)
    model = run / "model.keras"
    whole = model.read_bytes()
    (cwd / "mine.csv").write_text("mine\n")
    for damage in ("truncated", "empty", "a zip without a model", "a link to another file"):
        model.unlink()
        if damage == "truncated":
            model.write_bytes(whole[:5000])
        elif damage == "empty":
            model.write_bytes(b"")
        elif damage == "a zip without a model":
            with zipfile.ZipFile(model, "w") as archive:
                archive.writestr("notes.txt", "not a model")
        else:
            model.symlink_to(cwd / "mine.csv")
        out = dlrun("predict", run, "test.npz", "-o", "damaged.csv", cwd=cwd, check=2)
        assert "is not a Keras model file (truncated or corrupt)" in out.stderr, (damage, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert not list(cwd.glob("*damaged.csv*")), damage
    assert (cwd / "mine.csv").read_text() == "mine\n"


# --------------------------------------------------------------------------- CSV columns and class names

_CSV_RECIPE = """\
name: flowers
data: {source: csv, path: flowers.csv, target: species, split: {test: {fraction: 0.25}}}
preprocessing: [{transform: standardize}]
model:
  layers:
    - Dense: {units: 8, activation: relu}
    - Dense: {units: 3, activation: softmax}
compile: {optimizer: {Adam: {learning_rate: 0.05}}, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {epochs: 15, batch_size: 16}
"""


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    from sklearn.datasets import load_iris

    cwd = tmp_path_factory.mktemp("flowers")
    iris = load_iris(as_frame=True)
    table = iris.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    table["species"] = [iris.target_names[t] for t in iris.target]
    table.sample(frac=1, random_state=0).to_csv(cwd / "flowers.csv", index=False)
    (cwd / "flowers.yaml").write_text(_CSV_RECIPE)
    return {"cwd": cwd, "summary": train(cwd, "flowers.yaml"), "table": table}


def test_csv_run_reads_columns_by_name_and_names_its_classes(flowers):
    cwd, table = flowers["cwd"], flowers["table"]
    new = table.drop(columns=["species"]).iloc[::10][["petal_width", "sepal_length", "petal_length", "sepal_width"]]
    new.to_csv(cwd / "new.csv", index=False)  # other column order, no label: matched by name
    dlrun("predict", "flowers", "new.csv", "-o", "new_pred.csv", "--output-root", "out", cwd=cwd)
    import pandas as pd

    predicted = pd.read_csv(cwd / "new_pred.csv")
    assert set(predicted["class"]) <= {"setosa", "versicolor", "virginica"}
    agree = np.mean(predicted["class"].to_numpy() == table["species"].iloc[::10].to_numpy())
    assert agree > 0.8
    new.drop(columns=["petal_width"]).to_csv(cwd / "lacking.csv", index=False)
    out = dlrun("predict", "flowers", "lacking.csv", "-o", "x.csv", "--output-root", "out", cwd=cwd, check=2)
    assert "no column 'petal_width'" in out.stderr and not (cwd / "x.csv").exists()


def test_evaluate_renumbers_text_labels_in_the_runs_class_order(flowers):
    cwd, table = flowers["cwd"], flowers["table"]
    two = table[table["species"] != "setosa"]  # its own sorted classes would be versicolor=0, virginica=1
    two.to_csv(cwd / "two.csv", index=False)
    both = json.loads(dlrun("evaluate", "flowers", "two.csv", "-o", "out", "--json", "--no-track", cwd=cwd).stdout)
    dlrun("predict", "flowers", "two.csv", "-o", "two_pred.csv", "--output-root", "out", cwd=cwd)
    import pandas as pd

    predicted = pd.read_csv(cwd / "two_pred.csv")["class"].to_numpy()
    assert both["metrics"]["accuracy"] == pytest.approx(np.mean(predicted == two["species"].to_numpy()), abs=1e-6)


# --------------------------------------------------------------------------- K-fold models


def test_a_kfold_run_needs_a_fold_or_a_refit(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from _recipes import iris_recipe

    (tmp_path / "iris.yaml").write_text(iris_recipe("iris_folds", epochs=2, shuffle=True))
    summary = json.loads(dlrun("kfold", "iris.yaml", "--k", "2", "-o", "out", "--json", cwd=tmp_path).stdout)
    np.savez(tmp_path / "rows.npz", x=np.random.default_rng(0).normal(5, 1, (6, 4)))
    out = dlrun("predict", summary["run_dir"], "rows.npz", "-o", "p.csv", cwd=tmp_path, check=2)
    assert "--fold N" in out.stderr and "folds 1, 2" in out.stderr
    dlrun("predict", summary["run_dir"], "rows.npz", "-o", "p.csv", "--fold", "2", cwd=tmp_path)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 7
    out = dlrun("predict", summary["run_dir"], "rows.npz", "-o", "q.csv", "--fold", "3", cwd=tmp_path, check=2)
    assert "has folds 1, 2" in out.stderr


# --------------------------------------------------------------------------- texts, images, series

_TEXT_RECIPE = """\
name: reviews
data: {source: text_directory, path: reviews, classes: [neg, pos], split: {validation: {fraction: 0.25}}}
preprocessing: [{transform: text_vectorization, max_tokens: 50, output_sequence_length: 6}]
model:
  layers:
    - Embedding: {input_dim: 50, output_dim: 4}
    - GlobalAveragePooling1D
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: {Adam: {learning_rate: 0.05}}, loss: binary_crossentropy, metrics: [accuracy]}
fit: {epochs: 12, batch_size: 8}
"""


@pytest.mark.slow
def test_text_run_predicts_with_its_saved_vocabulary(tmp_path):
    rng = np.random.default_rng(0)
    words = {"neg": ["awful", "bad", "dull", "boring"], "pos": ["great", "good", "superb", "lovely"]}
    for part in ("train", "test"):
        for label, vocab in words.items():
            folder = tmp_path / "reviews" / part / label
            folder.mkdir(parents=True)
            for i in range(24):
                (folder / f"{i}.txt").write_text(" ".join(rng.choice(vocab + ["the", "film"], size=5)))
    (tmp_path / "reviews.yaml").write_text(_TEXT_RECIPE)
    summary = train(tmp_path, "reviews.yaml")
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.txt").write_text("great superb lovely film")
    (new / "b.txt").write_text("awful boring dull film")
    (new / "c.txt").write_text("zebra quantum great")  # words the vocabulary never saw → [UNK]
    dlrun("predict", "reviews", "new", "-o", "p.jsonl", "--output-root", "out", cwd=tmp_path)
    rows = {Path(r["file"]).name: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert rows["a.txt"]["class"] == "pos" and rows["b.txt"]["class"] == "neg"

    import keras

    vocabulary = json.loads((Path(summary["run_dir"]) / "preprocessing.json").read_text())[0]["vocabulary"]
    layer = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6, vocabulary=vocabulary)
    model = keras.saving.load_model(Path(summary["run_dir"]) / "model.keras")
    texts = [(new / n).read_text() for n in ("a.txt", "b.txt", "c.txt")]
    expected = model.predict(layer(np.array(texts)), verbose=0)[:, 0]
    got = [rows[n]["probability"] if rows[n]["class"] == "pos" else 1 - rows[n]["probability"]
           for n in ("a.txt", "b.txt", "c.txt")]
    np.testing.assert_allclose(got, expected, atol=1e-6)


_IMAGE_RECIPE = """\
name: colours
data: {source: image_directory, path: colours, image_size: [12, 12], rescale: 0.00392156862745098}
model:
  layers:
    - Flatten
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: {Adam: {learning_rate: 0.01}}, loss: binary_crossentropy, metrics: [accuracy]}
fit: {epochs: 4, batch_size: 8}
"""


def _square(path: Path, colour: tuple[int, int, int], size: int) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), colour).save(path)


@pytest.mark.slow
def test_image_run_resizes_new_images_to_its_image_size(tmp_path):
    for part in ("train", "validation", "test"):
        for name, colour in (("blue", (10, 20, 230)), ("red", (230, 20, 10))):
            folder = tmp_path / "colours" / part / name
            folder.mkdir(parents=True)
            for i in range(8):
                _square(folder / f"{i}.png", tuple(min(255, c + 3 * i) for c in colour), 12)
    (tmp_path / "colours.yaml").write_text(_IMAGE_RECIPE)
    train(tmp_path, "colours.yaml")
    new = tmp_path / "new"
    new.mkdir()
    _square(new / "big_red.png", (240, 10, 10), 40)  # other sizes than the run's 12×12
    _square(new / "big_blue.jpg", (10, 10, 240), 30)
    dlrun("predict", "colours", "new", "-o", "p.csv", "--output-root", "out", cwd=tmp_path)
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv").set_index("file")
    assert table.loc["new/big_red.png", "class"] == "red"
    assert table.loc["new/big_blue.jpg", "class"] == "blue"
    result = json.loads(dlrun("evaluate", "colours", "colours/test", "-o", "out", "--json", "--no-track",
                              cwd=tmp_path).stdout)
    assert result["rows"] == 16 and result["metrics"]["accuracy"] == 1.0


_SERIES_RECIPE = """\
name: waves
data:
  source: timeseries_csv
  path: waves.csv
  target: level
  lookback: 12
  step: 2
  delay: 3
  train: {end: 0.7}
  validation: {start: 0.7}
model:
  layers:
    - Flatten
    - Dense: {units: 1}
compile: {optimizer: {Adam: {learning_rate: 0.01}}, loss: mse, metrics: [mae]}
fit: {epochs: 3, batch_size: 32}
"""


@pytest.mark.slow
def test_series_run_forecasts_in_the_series_own_units(tmp_path):
    t = np.arange(500)
    level = 100 + 20 * np.sin(t / 9)
    import pandas as pd

    pd.DataFrame({"level": level, "other": np.cos(t / 5)}).to_csv(tmp_path / "waves.csv", index=False)
    (tmp_path / "waves.yaml").write_text(_SERIES_RECIPE)
    summary = train(tmp_path, "waves.yaml")
    pd.DataFrame({"level": level[:100], "other": np.cos(t[:100] / 5)}).to_csv(tmp_path / "new.csv", index=False)
    dlrun("predict", "waves", "new.csv", "-o", "f.csv", "--output-root", "out", cwd=tmp_path)
    forecast = pd.read_csv(tmp_path / "f.csv")
    assert list(forecast["row"]) == list(range(12, 101))  # the last forecast is for 3 rows after the file

    import keras

    stats = json.loads((Path(summary["run_dir"]) / "preprocessing.json").read_text())
    mean = np.array([stats["mean"]["level"], stats["mean"]["other"]])
    std = np.array([stats["std"]["level"], stats["std"]["other"]])
    values = np.stack([level[:100], np.cos(t[:100] / 5)], axis=1)
    windows = np.stack([values[i - 12:i:2] for i in range(12, 101)])
    model = keras.saving.load_model(Path(summary["run_dir"]) / "model.keras")
    expected = model.predict((windows - mean) / std, verbose=0)[:, 0] * std[0] + mean[0]
    np.testing.assert_allclose(forecast["prediction"], expected, rtol=1e-5)
    assert 60 < forecast["prediction"].mean() < 140  # the level's own units, not normalized ones
