"""Data a run cannot use ends before the run exists (exit 2, no traceback, nothing created) with one
line naming the cause and the file, array, column or row: labels out of range for the output layer,
images TensorFlow cannot decode, files that cannot be read, NaN or infinite values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

import dlrun
from dlrun.data.sources import load_data
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

# A small classifier whose output has 10 units; the data section is filled in per test.
CLASSIFIER = """\
name: {name}
data:
{data}
model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dense: {{units: {units}, activation: {activation}}}
compile:
  optimizer: adam
  loss: {loss}
fit:
  epochs: 1
  batch_size: 16
"""


def classifier(folder: Path, name: str, data: str, *, units: int = 10, activation: str = "softmax",
               loss: str = "sparse_categorical_crossentropy") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(CLASSIFIER.format(name=name, data=textwrap.indent(data.strip(), "  "), units=units,
                                      activation=activation, loss=loss))
    return path


def dlrun_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*DLRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "tensorflow" not in result.stderr.lower(), result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    return line


def spec(**fields):
    return TypeAdapter(DataSpec).validate_python(fields)


def features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


# --------------------------------------------------------------------------- labels


def test_a_label_beyond_the_output_layer_is_named_before_the_run(tmp_path):
    y = np.arange(200) % 10
    y[137] = 12  # far beyond the rows the model is first tried on
    np.savez(tmp_path / "d.npz", x=features(200), y=y)
    recipe = classifier(tmp_path, "labels_cli", "source: npz\npath: d.npz\nsplit: {test: none, validation: none}")
    line = one_error_line(dlrun_cli("train", str(recipe), "-o", "out", cwd=tmp_path))
    assert line == (f"error: data: the training part's label on row 137 of array 'y' in {tmp_path / 'd.npz'} is "
                    "12, but the model's output has 10 units, so sparse_categorical_crossentropy takes the "
                    "classes 0 … 9 (1 row is outside) — give the last layer 13 units, or number the classes "
                    "from 0")
    assert not (tmp_path / "out" / "runs").exists()


def test_labels_are_checked_in_every_part_and_named_in_the_source_s_terms(tmp_path):
    lines = ["a,b,label", *(f"{a:.3f},{b:.3f},{i % 3}" for i, (a, b) in enumerate(features(60)[:, :2]))]
    lines[50] = lines[50].rsplit(",", 1)[0] + ",7"  # file line 51: taken into the test split
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    data = "source: csv\npath: t.csv\ntarget: label\nsplit: {test: {last: 15}, validation: {first: 10}}"
    with pytest.raises(DataError, match=rf"the test split's label on line 51 of {tmp_path / 't.csv'} is 7, but "
                                        r"the model's output has 3 units"):
        dlrun.train(classifier(tmp_path, "labels_csv", data, units=3), output_root=tmp_path / "out")

    y = (np.arange(80) % 2).astype(np.float32)
    y[3] = 2.0  # a validation row (the first 10)
    np.savez(tmp_path / "b.npz", x=features(80), y=y)
    data = "source: npz\npath: b.npz\nsplit: {test: none, validation: {first: 10}}"
    with pytest.raises(DataError, match=r"the validation part's label on row 3 of array 'y' .* is 2.0, outside "
                                        r"0 … 1 for binary_crossentropy"):
        dlrun.train(classifier(tmp_path, "labels_bin", data, units=1, activation="sigmoid",
                               loss="binary_crossentropy"), output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- images


def _images(root: Path, n: int = 6, size: int = 16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "validation"):
        for name in ("cats", "dogs"):
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{name}.{i}.jpg", quality=90)
    return root


def test_a_corrupt_jpeg_is_named_before_the_run_starts(tmp_path):
    images = _images(tmp_path / "pets")
    bad = images / "train" / "dogs" / "dogs.4.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # cut short, as by a broken copy
    recipe = tmp_path / "pets.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: pets
        data: {source: image_directory, path: pets, image_size: [16, 16], test: null, rescale: 0.0039}
        model:
          layers: [Flatten, {Dense: {units: 1, activation: sigmoid}}]
        compile: {optimizer: adam, loss: binary_crossentropy}
        fit: {epochs: 1, batch_size: 4}
        """))
    line = one_error_line(dlrun_cli("train", str(recipe), "-o", "out", cwd=tmp_path))
    assert line == (f"error: data.train: the image {bad} cannot be decoded: damaged or cut-short JPEG data — "
                    "remove or replace the file")
    assert not (tmp_path / "out" / "runs").exists()


def test_every_kind_of_undecodable_image_is_found_by_name(tmp_path):
    images = _images(tmp_path / "pets", n=3, size=64)
    folder = images / "validation" / "cats"
    good = (folder / "cats.0.jpg").read_bytes()  # header intact, end marker intact, the scan data garbled:
    (folder / "cats.0.jpg").write_bytes(good[:1000] + np.random.default_rng(1).bytes(len(good) - 1002) + good[-2:])
    (folder / "cats.1.jpg").write_bytes(b"")
    (folder / "cats.2.jpg").write_text("<html>Not Found</html>")
    with pytest.raises(DataError) as caught:
        load_data(spec(source="image_directory", path=str(images), image_size=[16, 16], test=None), Path("."))
    text = str(caught.value)
    assert text.startswith(f"data.validation: the image {folder / 'cats.0.jpg'} cannot be decoded: ")
    assert f"(and 2 more: {folder / 'cats.1.jpg'}, {folder / 'cats.2.jpg'})" in text


# --------------------------------------------------------------------------- unreadable files


def test_files_that_cannot_be_read_are_named(tmp_path):
    np.savez(tmp_path / "whole.npz", x=features(50), y=np.arange(50) % 2)
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.npz is not a NumPy \.npz file, or it is cut short or damaged"):
        load_data(spec(source="npz", path=str(tmp_path / "cut.npz")), Path("."))

    damaged = bytearray(data)
    damaged[200:220] = bytes(20)  # inside array 'x': the archive opens, the array does not
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"data\.x: array 'x' of .*damaged\.npz is damaged \(Bad CRC-32"):
        load_data(spec(source="npz", path=str(tmp_path / "damaged.npz")), Path("."))

    (tmp_path / "table.csv").mkdir()  # a folder where the file should be
    with pytest.raises(DataError, match=r"data\.path: .*table\.csv is a folder, not a file"):
        load_data(spec(source="csv", path=str(tmp_path / "table.csv"), target="y"), Path("."))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file: permissions cannot be tested as root")
def test_a_file_this_user_may_not_read_is_named(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,0\n2,1\n")
    (tmp_path / "t.csv").chmod(0)
    with pytest.raises(DataError, match=r"data\.path: cannot read .*t\.csv: Permission denied"):
        load_data(spec(source="csv", path=str(tmp_path / "t.csv"), target="y"), Path("."))
    texts = tmp_path / "texts" / "train" / "pos"
    texts.mkdir(parents=True)
    (texts / "a.txt").write_text("good")
    (texts / "a.txt").chmod(0)
    with pytest.raises(DataError, match=r"train/pos/a\.txt in .* cannot be read: Permission denied"):
        load_data(spec(source="text_directory", path=str(tmp_path / "texts"), test=None), Path("."))


# --------------------------------------------------------------------------- non-finite values


def test_an_infinite_csv_value_is_refused_naming_column_and_line(tmp_path):
    rows = [f"{i * 0.1:.1f},{i % 3}" for i in range(40)]
    rows[9] = "inf,1"  # line 11 of the file
    (tmp_path / "t.csv").write_text("a,label\n" + "\n".join(rows) + "\n")
    recipe = classifier(tmp_path, "inf_csv", "source: csv\npath: t.csv\ntarget: label\n"
                                             "split: {test: none, validation: none}", units=3)
    text = recipe.read_text().replace("compile:", "preprocessing: [{transform: standardize}]\ncompile:")
    recipe.write_text(text)
    line = one_error_line(dlrun_cli("train", str(recipe), "-o", "out", cwd=tmp_path))
    assert line == (f"error: data.features: column 'a' of {tmp_path / 't.csv'} has 1 NaN or infinite value (the "
                    "first, inf, on line 11); replace them or drop those lines")
    assert not (tmp_path / "out").exists()


def test_nan_and_infinite_values_are_refused_in_every_in_memory_source(tmp_path):
    x = features(30)
    x[17, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(30) % 2)
    with pytest.raises(DataError, match=r"data\.x: array 'x' of .*nan\.npz has 1 NaN or infinite value \(the "
                                        r"first, nan, in row 17\)"):
        load_data(spec(source="npz", path=str(tmp_path / "nan.npz")), Path("."))

    y_test = np.zeros(5, np.float32)
    y_test[4] = -np.inf
    np.savez(tmp_path / "inf.npz", x=features(30), y=np.zeros(30, np.float32), x_test=features(5), y_test=y_test)
    with pytest.raises(DataError, match=r"data\.y_test: array 'y_test' of .*inf\.npz has 1 NaN or infinite value "
                                        r"\(the first, -inf, in row 4\)"):
        load_data(spec(source="npz", path=str(tmp_path / "inf.npz")), Path("."))

    (tmp_path / "big.csv").write_text("a,y\n1,0\n1e300,1\n2,0\n")  # finite in the file, infinite as float32
    with pytest.raises(DataError, match=r"column 'a' of .*big\.csv has 1e\+300 on line 3, beyond what float32 holds"):
        load_data(spec(source="csv", path=str(tmp_path / "big.csv"), target="y"), Path("."))

    series = "\n".join(f"{i},{20 + (i % 7)},{i % 5}" for i in range(60)).splitlines()
    series[30] = "30,-inf,3"  # line 32
    (tmp_path / "s.csv").write_text("t,temp,wind\n" + "\n".join(series) + "\n")
    with pytest.raises(DataError, match=r"column 'temp' of .*s\.csv has 1 NaN or infinite value \(the first, "
                                        r"-inf, on line 32\)"):
        load_data(spec(source="timeseries_csv", path=str(tmp_path / "s.csv"), target="temp", lookback=5, delay=1,
                       train={"end": 40}, validation={"start": 40}), Path("."))


def test_the_generic_check_covers_sources_without_files():
    from dlrun.data.dataset import Dataset
    from dlrun.data.finite import check_finite

    x = np.ones((4, 2, 2), np.float32)
    x[2, 1, 0] = np.inf
    with pytest.raises(DataError, match=r"data: x_train of keras\.datasets\.x\.load_data\(\) has 1 NaN or infinite "
                                        r"value \(the first, inf, in row 2\)"):
        check_finite(Dataset(x, np.zeros(4), info={"origin": "keras.datasets.x.load_data()"}), "keras")
    check_finite(Dataset(np.ones((2, 3)), np.array([0, 1]), np.array([[1, 2]], dtype=object), None), "keras")
