"""The tasks that are not ``fit`` (DeepDream 8.2, style transfer 8.3, looking inside a convnet 5.4)
end to end as recipes and as ``dlrun explain``: a convnet trained here on a tiny image folder
stands for the book's dogs-vs-cats model, random weights for ImageNet's (which cannot be
downloaded here: the recipes stop before a run with the Pretrained layer's message)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import ModelBuildError, RecipeError

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DLRUN = [sys.executable, "-m", "dlrun"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
sys.path.insert(0, str(Path(__file__).parent))
from test_data_images import write_image_folder  # noqa: E402


def _dlrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DLRUN, *args], capture_output=True, text=True, env=ENV, timeout=600)


def _photo(path: Path, size=(96, 128), seed: int = 0) -> Path:
    """A smooth colour picture with a bright blob (something for the filters to find)."""
    from PIL import Image

    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((y - height / 3) ** 2) + ((x - width / 2) ** 2)) / (2 * (height / 6) ** 2))
    rng = np.random.default_rng(seed)
    pixels = np.stack([80 + 150 * blob, 60 + 100 * (x / width), 120 - 60 * (y / height)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """An output root holding a finished run of the book's 5.2 convnet (trained on a tiny folder)."""
    root = tmp_path_factory.mktemp("tasks")
    folder = write_image_folder(root / "cats_and_dogs_small", {"train": 6, "validation": 2, "test": 2})
    summary = dlrun.train(RECIPES / "dogs_vs_cats_augmented.yaml",
                          [f"data.path={folder}", "data.image_size=[64, 64]", "fit.epochs=1", "fit.steps_per_epoch=2"],
                          output_root=root)
    assert summary.status == "FINISHED"
    _photo(root / "cat.png", (80, 80))
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_visualize_activations_draws_every_conv_and_pool_layer_of_the_run(root):
    run = _dlrun("train", str(RECIPES / "visualize_activations.yaml"), "-o", str(root), "--json",
                 "--set", f"task.image={root / 'cat.png'}")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["protocol"] == "explain" and summary["status"] == "FINISHED"
    run_dir = Path(summary["run_dir"])
    pictures = _files(run_dir / "explain" / "activations")
    assert len(pictures) == 8 and pictures[0].startswith("00_") and all(p.endswith(".png") for p in pictures)
    report = json.loads((run_dir / "explain.json").read_text())
    assert report["activations"][0]["shape"] == [62, 62, 32]  # the first Conv2D at 64×64, 32 channels
    data = json.loads((run_dir / "data.json").read_text())
    assert data["task"] == "explain" and data["preprocessing"] == "rescale" and data["image_shape"] == [64, 64, 3]
    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    logged = {a.path for a in client.list_artifacts(summary["run_id"], "explain/activations")}
    assert len(logged) == 8
    assert client.get_run(summary["run_id"]).data.tags["dlrun.protocol"] == "explain"


@pytest.mark.slow
def test_dlrun_explain_draws_activations_filters_and_grad_cam_of_a_run(root, tmp_path):
    out = tmp_path / "look"
    run = _dlrun("explain", "dogs_vs_cats_augmented", "--image", str(root / "cat.png"), "--filters", "3",
                 "--steps", "4", "-o", str(out), "--output-root", str(root), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [entry["shape"] for entry in report["filters"]] == [[3, 64, 64]] * 4  # four Conv2D layers
    assert all(entry["activation_after"] > entry["activation_before"] for entry in report["filters"])
    assert report["grad_cam"]["class_index"] in (0, 1) and 0 <= report["grad_cam"]["score"] <= 1
    assert _files(out) == ["activations", "explain.json", "filters", "grad_cam.png", "grad_cam_heatmap.png"]
    assert len(_files(out / "activations")) == 8 and len(_files(out / "filters")) == 4

    named = _dlrun("explain", "dogs_vs_cats_augmented", "--image", str(root / "cat.png"), "--show", "activations",
                   "--layers", "conv2d_9", "--output-root", str(root))
    assert named.returncode == 2 and "layer 'conv2d_9' is not in model" in named.stderr, named.stderr
    no_image = _dlrun("explain", "dogs_vs_cats_augmented", "--show", "grad_cam", "--output-root", str(root))
    assert no_image.returncode == 2 and "give --image" in no_image.stderr, no_image.stderr
    nothing = _dlrun("generate", "dogs_vs_cats_augmented", "--output-root", str(root))
    assert nothing.returncode == 2 and "has nothing to generate" in nothing.stderr, nothing.stderr


@pytest.mark.slow
def test_visualize_filters_ascends_vgg16_filters(tmp_path):
    summary = dlrun.train(RECIPES / "visualize_filters.yaml",
                          ["task.base.weights=null", "task.filters.filters=4", "task.filters.steps=3",
                           "task.filters.size=32", "task.filters.layers=[block1_conv1, block2_conv1]"],
                          output_root=tmp_path)
    run_dir = Path(summary.run_dir)
    assert _files(run_dir / "explain" / "filters") == ["00_block1_conv1.png", "01_block2_conv1.png"]
    assert summary.metrics["filters_block1_conv1_activation_gain"] > 0
    assert json.loads((run_dir / "data.json").read_text())["network"] == "keras.applications.VGG16"


@pytest.mark.slow
def test_grad_cam_of_vgg16_with_its_classifier(tmp_path):
    image = _photo(tmp_path / "dog.png")
    summary = dlrun.train(RECIPES / "grad_cam.yaml", ["task.base.weights=null", f"task.image={image}"],
                          output_root=tmp_path)
    run_dir = Path(summary.run_dir)
    assert 0 <= summary.metrics["grad_cam_class"] < 1000 and summary.metrics["grad_cam_score"] > 0
    report = json.loads((run_dir / "explain.json").read_text())
    assert report["grad_cam"]["layer"] == "block5_conv3"
    from PIL import Image

    with Image.open(run_dir / "explain" / "grad_cam.png") as overlay:
        assert overlay.size == (224, 224)  # the image at VGG16's input size, the heatmap over it


@pytest.mark.slow
def test_deep_dream_climbs_over_octaves_and_saves_every_n_steps(tmp_path):
    image = _photo(tmp_path / "sky.png", (120, 120))
    summary = dlrun.train(RECIPES / "deep_dream.yaml",
                          ["task.base.weights=null", f"task.image={image}", "task.num_octave=2", "task.iterations=3",
                           "task.save_every=2", "task.max_loss=null"], output_root=tmp_path)
    folder = Path(summary.run_dir) / "dream"
    assert _files(folder) == ["dream.png", "dream_iter_0002.png", "dream_iter_0004.png", "dream_iter_0006.png",
                              "losses.csv"]
    assert len((folder / "losses.csv").read_text().splitlines()) == 1 + 6
    assert summary.metrics["dream_steps"] == 6 and summary.metrics["dream_loss_last"] > 0


@pytest.mark.slow
def test_style_transfer_lowers_its_loss_with_lbfgs(tmp_path):
    content, style = _photo(tmp_path / "c.png", (60, 90)), _photo(tmp_path / "s.png", (50, 50), seed=1)
    summary = dlrun.train(RECIPES / "style_transfer.yaml",
                          ["task.base.weights=null", f"task.content_image={content}", f"task.style_image={style}",
                           "task.height=40", "task.iterations=2", "task.maxfun=4"], output_root=tmp_path)
    folder = Path(summary.run_dir) / "style"
    assert _files(folder) == ["losses.csv", "style.png", "style_iter_0001.png", "style_iter_0002.png"]
    assert summary.metrics["style_loss_last"] < summary.metrics["style_loss_start"]
    from PIL import Image

    with Image.open(folder / "style.png") as result:
        assert result.size == (60, 40)  # 40 high, the content's 3:2 proportions


def test_imagenet_weights_offline_stop_a_task_before_its_run(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    image = _photo(tmp_path / "sky.png")
    with pytest.raises(ModelBuildError, match="task.base.weights: the ImageNet weights of InceptionV3 can't be "
                                              "downloaded .* use weights: null"):
        dlrun.train(RECIPES / "deep_dream.yaml", [f"task.image={image}"], output_root=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_a_task_reads_its_images_only_where_the_recipe_may(tmp_path):
    """The recipe's images beside the checkout are outside its folder: refused unless allowed."""
    with pytest.raises(RecipeError, match=r"task.image: .* is outside the recipe's folder .* --allow-read"):
        dlrun.train(RECIPES / "deep_dream.yaml", output_root=tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntask: {kind: deep_dream, base: {application: InceptionV3, weights: null}, "
                    "image: /etc/hostname, layers: {mixed2: 1.0}}\n")
    with pytest.raises(RecipeError, match=r"task.image: /etc/hostname is outside the recipe's folder"):
        dlrun.load(path)
    with pytest.raises(RecipeError, match=r"task.image: no such file"):
        dlrun.load(path, ["task.image=missing.png"])
