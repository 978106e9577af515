"""``source: keras`` — ``keras.datasets.<name>.load_data(**options)`` through Keras' own cache.

Keras downloads a missing file and checks its hash. Offline that fails with a bare URL
error: turn it into one clear message. A cached file whose hash differs Keras replaces with a
download, or deletes when the download fails — and ``options: {path: precious.npz}`` names any
file of that folder. So dlrun never hands Keras a file it may delete: one that is not the
file Keras expects is refused, untouched, before Keras sees it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import sys
from pathlib import Path

from dlrun.data.dataset import Dataset
from dlrun.errors import DataError, did_you_mean
from dlrun.recipe.reads import file_sha256

_GCS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION = ["train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]

# What load_data() reads under $KERAS_HOME/datasets/, where Keras fetches it from, and the
# SHA-256 it checks (None: none; such a file Keras never replaces); mirrors
# keras/src/datasets/*.py (Keras 3.15, kept in sync by a test). "{path}" is the `path` option.
_CACHE_FILES: dict[str, list[tuple[str, str, str | None]]] = {
    "mnist": [("{path}", _GCS + "mnist.npz", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")],
    "imdb": [("{path}", _GCS + "imdb.npz", "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f")],
    "reuters": [("{path}", _GCS + "reuters.npz", "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916")],
    "boston_housing": [("{path}", _GCS + "boston_housing.npz",
                        "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5")],
    "fashion_mnist": [(f"fashion-mnist/{f}", _GCS + f, None) for f in _FASHION],
    # get_file(fname=<dir>, extract=True) keeps the downloaded archive as <dir>_archive.
    "cifar10": [("cifar-10-batches-py-target_archive", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                 "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")],
    "cifar100": [("cifar-100-python-target_archive", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                  "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7")],
}
_DEFAULT_PATH = {"mnist": "mnist.npz", "imdb": "imdb.npz", "reuters": "reuters.npz",
                 "boston_housing": "boston_housing.npz"}

# Without a timeout, urlretrieve can wait for minutes behind a firewall that drops packets.
_DOWNLOAD_SOCKET_TIMEOUT_S = 30


def load_keras(spec, base_dir: Path) -> Dataset:
    load_data = _load_data_function(spec.name)
    _check_options(spec.name, load_data, spec.options)
    datasets_dir = keras_home() / "datasets"
    _refuse_foreign_files(spec.name, spec.options, datasets_dir)
    needed = cache_files(spec.name, spec.options)
    present_before = {name for name, _ in needed if (datasets_dir / name).exists()}
    try:
        downloads = len(present_before) < len(needed)
        with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S if downloads else None):
            (x_train, y_train), (x_test, y_test) = load_data(**spec.options)
    except Exception as error:
        missing = [(n, url) for n, url in needed if not (datasets_dir / n).exists()]
        if missing:  # Keras removes what it could not download (and a bad cached copy)
            raise DataError(_offline_message(spec.name, datasets_dir, missing, present_before,
                                             error)) from error
        if isinstance(error, (TypeError, ValueError)):
            raise DataError(f"data.options: keras.datasets.{spec.name}.load_data"
                            f"(**{spec.options!r}) failed: {error}") from error
        raise
    info = {"origin": f"keras.datasets.{spec.name}.load_data()",
            "options": dict(spec.options), "cache_dir": str(datasets_dir)}
    return Dataset(x_train, y_train, x_test, y_test, name=spec.name, info=info)


def keras_home() -> Path:
    """The folder Keras caches into (``$KERAS_HOME``, default ``~/.keras``)."""
    config = sys.modules.get("keras.src.backend.config")
    if config is not None and hasattr(config, "keras_home"):
        home = config.keras_home()  # Keras read $KERAS_HOME when it was imported
    elif os.environ.get("KERAS_HOME"):
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if os.path.exists(home) and not os.access(home, os.W_OK):
        home = "/tmp/.keras"  # get_file() falls back there too
    return Path(home)


def cache_files(name: str, options: dict) -> list[tuple[str, str]]:
    """``(file under datasets/, download URL)`` pairs that ``load_data`` needs."""
    path = str(options.get("path", _DEFAULT_PATH.get(name, "")))
    return [(f.format(path=path), url) for f, url, _ in _CACHE_FILES[name]]


def _refuse_foreign_files(name: str, options: dict, datasets_dir: Path) -> None:
    """Stop before Keras replaces or deletes a file that is not the one it expects (a file of
    the user's named by ``options.path``, a damaged copy): DataError naming it, file untouched."""
    path = str(options.get("path", _DEFAULT_PATH.get(name, "")))
    for pattern, url, digest in _CACHE_FILES[name]:
        file = datasets_dir / pattern.format(path=path)
        if digest is None or not (file.exists() or file.is_symlink()):
            continue
        why = None
        if not file.is_file():
            why = "is not a file"
        else:
            try:
                found = file_sha256(file)
            except OSError as error:
                why = f"cannot be read ({error})"
            else:
                if found != digest:
                    why = f"is not the file Keras expects: its SHA-256 hash did not match ({found[:12]}…, Keras wants {digest[:12]}…)"
        if why:
            raise DataError(
                f"data: {file} {why}. Keras would replace it with a download of {url} — or delete it, offline — so "
                f"dlrun leaves it untouched and stops. Move it out of {datasets_dir}/ (or name another file with "
                f"data.options.path), or read it as your own data with source: npz")


def _load_data_function(name: str):
    import keras

    return getattr(keras.datasets, name).load_data


def _check_options(name: str, load_data, options: dict) -> None:
    params = inspect.signature(load_data).parameters.values()
    accepted = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    path = str(options.get("path", ""))
    if "/" in path or os.sep in path:  # get_file() takes a bare name under datasets/
        raise DataError(f"data.options.path: '{path}' must be a file name inside "
                        f"$KERAS_HOME/datasets/, not a path; for a file elsewhere use "
                        f"`source: npz`")
    for option in options:
        if option not in accepted:
            listed = ", ".join(accepted) if accepted else "no options"
            raise DataError(
                f"data.options.{option}: keras.datasets.{name}.load_data() has no option "
                f"'{option}' (it accepts: {listed}){did_you_mean(option, accepted)}"
            )


@contextlib.contextmanager
def _socket_timeout(seconds: float | None):
    previous = socket.getdefaulttimeout()
    if seconds is not None and previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _offline_message(name, datasets_dir, missing, present_before, error) -> str:
    files = " and ".join(f"'{n}' (downloaded from {url})" for n, url in missing)
    replaced = [n for n, _ in missing if n in present_before]
    why = (f" A copy of {', '.join(replaced)} was there but its hash did not match, so Keras "
           "tried to download it again and removed it." if replaced else "")
    return (
        f"data: keras.datasets.{name} needs {files} in {datasets_dir}/ "
        f"(that is $KERAS_HOME/datasets/, default ~/.keras/datasets/); it is not there and "
        f"could not be downloaded ({type(error).__name__}: {error}).{why} On a machine without "
        f"internet, copy the original file into that folder under that name — Keras checks "
        f"its hash, so it must be the exact file from that address — or use a source that "
        f"needs no download (source: embedded, npz or csv)."
    )
