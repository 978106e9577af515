"""The book's chapter-5 recipes (5.1–5.3) run end to end: one short epoch on a tiny generated
image folder (pretrained bases with random weights), and on the shared dogs-vs-cats copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dlrun
from dlrun.errors import ModelBuildError
from dlrun.recipe.loading import load_recipe
from test_data_images import write_image_folder

IMAGE_RECIPES = ["dogs_vs_cats_scratch", "dogs_vs_cats_augmented", "vgg16_feature_extraction",
                 "vgg16_frozen_augmented", "vgg16_fine_tuning"]
# Random weights offline, and images small enough to be quick (VGG16 needs at least 32×32;
# the from-scratch convnet's four poolings need about 64×64).
SMALL = {
    "dogs_vs_cats_scratch": ["data.image_size=[64, 64]"],
    "dogs_vs_cats_augmented": ["data.image_size=[64, 64]", "fit.steps_per_epoch=3"],
    "vgg16_feature_extraction": ["data.image_size=[32, 32]", "data.features.weights=null"],
    "vgg16_frozen_augmented": ["data.image_size=[32, 32]", "model.layers[4].Pretrained.weights=null"],
    "vgg16_fine_tuning": ["data.image_size=[32, 32]", "model.layers[4].Pretrained.weights=null",
                          "fit.fine_tune.epochs=1"],
}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "cats_and_dogs_small",
                              {"train": 6, "validation": 3, "test": 3})


@pytest.mark.parametrize("name", IMAGE_RECIPES + ["mnist_convnet"])
def test_recipes_cite_the_book_and_keep_its_settings(recipes_dir, tiny_folder, name):
    path = recipes_dir / f"{name}.yaml"
    assert path.read_text().startswith("# Deep Learning with Python, 5.")
    overrides = [f"data.path={tiny_folder}"] if name in IMAGE_RECIPES else []
    recipe = load_recipe(path, overrides).recipe
    if name in IMAGE_RECIPES:
        assert recipe.data.image_size == [150, 150] and recipe.data.label_mode == "binary"
        if _shared():  # the recipe's own path: the book's cats_and_dogs_small folder
            assert "cats_and_dogs_small" in load_recipe(path, require_data=False).recipe.data.path
    if name.startswith("vgg16"):
        assert "weights: imagenet" in path.read_text() or "weights: imagenet" in (
            recipes_dir / "vgg16_frozen_augmented.yaml").read_text()
    if name == "vgg16_fine_tuning":
        tune = recipe.fit.fine_tune
        assert (tune.layer, tune.unfreeze_from, tune.optimizer.args) == (
            "vgg16", "block5_conv1", {"learning_rate": 1e-5})


def _shared() -> bool:
    from conftest import SHARED_DATASETS

    return (SHARED_DATASETS / "dogs_vs_cats" / "cats_and_dogs_small_150").is_dir()


def _facts(summary) -> dict:
    path = Path(summary.run_dir) / "model_facts.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("name", IMAGE_RECIPES)
def test_image_recipe_runs_one_short_epoch_on_a_tiny_folder(recipes_dir, tiny_folder, tmp_path, name):
    summary = dlrun.train(recipes_dir / f"{name}.yaml",
                          [f"data.path={tiny_folder}", "fit.epochs=1", *SMALL[name]], output_root=tmp_path)
    assert summary.status == "FINISHED"
    assert {"final_val_accuracy", "final_val_loss", "test_accuracy", "test_loss"} <= set(summary.metrics)
    run_dir = Path(summary.run_dir)
    assert (run_dir / "model.keras").is_file()
    data = json.loads((run_dir / "data.json").read_text())
    assert data["source"] == "image_directory" and data["parts"]["train"]["files"] == 12
    epochs = len((run_dir / "history.csv").read_text().splitlines()) - 1
    facts = _facts(summary)
    if name == "vgg16_feature_extraction":
        assert data["features"]["feature_shape"] == [1, 1, 512]
    if name == "vgg16_frozen_augmented":
        assert facts["pretrained"]["vgg16"]["trainable"] is False
    if name == "vgg16_fine_tuning":
        # Stage two ran with block5 unfrozen: 3 trainable conv layers, the 10 before frozen.
        assert facts["trainable_layers"] == 3 and facts["frozen_layers"] == 10
        assert epochs == 2  # one epoch per stage
    else:
        assert epochs == 1


def test_mnist_convnet_runs_on_the_offline_mnist_images(recipes_dir, tmp_path):
    summary = dlrun.train(recipes_dir / "mnist_convnet.yaml", [
        "data={source: embedded, name: mnist_5k, limit: 2000, split: {test: {fraction: 0.25}}}",
        "fit.epochs=1"], output_root=tmp_path)
    assert summary.status == "FINISHED" and summary.metrics["test_accuracy"] > 0.5


def test_imagenet_weights_offline_stop_the_run_before_it_starts(recipes_dir, tiny_folder, tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ModelBuildError, match=r"model.layers\[4\] \(Pretrained\).weights: the ImageNet weights"):
        dlrun.train(recipes_dir / "vgg16_frozen_augmented.yaml", [f"data.path={tiny_folder}"],
                    output_root=tmp_path)
    assert not any(tmp_path.rglob("model.keras"))


@pytest.mark.parametrize("name, overrides", [
    ("dogs_vs_cats_scratch", ["fit.steps_per_epoch=3", "data.test=null"]),
    ("dogs_vs_cats_augmented", ["fit.steps_per_epoch=2", "data.test=null"]),
])
def test_recipe_runs_on_the_shared_dogs_vs_cats_folder(recipes_dir, shared_datasets, tmp_path, name, overrides):
    """The recipe's own data path: the 2,000/1,000/1,000 images at 150×150 (a few steps only)."""
    summary = dlrun.train(recipes_dir / f"{name}.yaml", ["fit.epochs=1", *overrides], output_root=tmp_path,
                          allow_read=[shared_datasets])  # outside the recipes' folder: the user allows it
    data = json.loads((Path(summary.run_dir) / "data.json").read_text())
    assert data["parts"]["train"]["per_class"] == {"cats": 1000, "dogs": 1000}
    assert data["parts"]["validation"]["files"] == 1000
    assert summary.status == "FINISHED" and 0.0 <= summary.metrics["final_val_accuracy"] <= 1.0
