"""The chapter 2–3 recipes run end to end, their Keras data swapped for small data of the
same kind (Keras' downloads are not to be had here)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """Integer word-index sequences like Keras' IMDB/Reuters (padded to 30 words)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "sequences.npz"
    x, x_test = rng.integers(1, 10000, (60, 30)), rng.integers(1, 10000, (20, 30))
    np.savez(path, x=x, y=rng.integers(0, 2, 60), x_test=x_test, y_test=rng.integers(0, 2, 20),
             y46=rng.integers(0, 46, 60), y46_test=rng.integers(0, 46, 20))
    return path


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one MLflow store for all: creating one costs seconds


def _run(recipes_dir, output_root, name, *overrides):
    summary = dlrun.train(recipes_dir / name, ["fit.epochs=1", *overrides], output_root=output_root)
    assert summary.status == "FINISHED"
    return summary.metrics


def _npz(path, y="y", validation=10):
    return (f"data={{source: npz, path: {path}, y: {y}, x_test: x_test, y_test: {y}_test, "
            f"split: {{test: dataset, validation: {{first: {validation}}}}}}}")


def test_quickstart(recipes_dir, output_root):
    metrics = _run(recipes_dir, output_root, "quickstart.yaml", "data.limit=300", "fit.batch_size=64")
    assert 0 <= metrics["test_accuracy"] <= 1


def test_mnist_dense(recipes_dir, output_root):
    data = "data={source: embedded, name: mnist_5k, limit: 300, split: {test: {fraction: 0.2}}}"
    metrics = _run(recipes_dir, output_root, "mnist_dense.yaml", data)
    assert "test_accuracy" in metrics


def test_imdb_dense(recipes_dir, output_root, sequences):
    metrics = _run(recipes_dir, output_root, "imdb_dense.yaml", _npz(sequences))
    assert "final_val_accuracy" in metrics and "test_accuracy" in metrics


def test_reuters_dense(recipes_dir, output_root, sequences):
    metrics = _run(recipes_dir, output_root, "reuters_dense.yaml", _npz(sequences, y="y46"))
    assert "test_accuracy" in metrics


def test_boston_housing(recipes_dir, output_root):
    metrics = _run(recipes_dir, output_root, "boston_housing.yaml", "evaluation.k=2", "fit.batch_size=64")
    assert metrics["cv_val_mae_mean"] > 0
