"""The chapter 7.1 graph recipes validate and train one epoch end to end, on small random data of
the book's shapes written by recipes/data/make_graph_data.py (the book trains them on random
data too); `dlrun show` prints a graph model's summary."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dlrun
from dlrun.recipe.loading import load_recipe

ROOT = Path(__file__).resolve().parent.parent
GRAPH_RECIPES = ["qa_two_inputs", "three_outputs", "inception_module", "residual_blocks", "siamese_lstm",
                 "xception_siamese"]


def _maker():
    spec = importlib.util.spec_from_file_location("make_graph_data", ROOT / "recipes" / "data" / "make_graph_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """name → a small .npz of that recipe's arrays."""
    folder, maker = tmp_path_factory.mktemp("graph_data"), _maker()
    sizes = {"xception_siamese": {"size": 71}}
    return {name: maker.write(name, folder / f"{name}.npz", 24 if name != "xception_siamese" else 8,
                              **sizes.get(name, {}))
            for name in maker.MAKERS}


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one MLflow store for all: creating one costs seconds


def _train(recipes_dir, output_root, name, *overrides):
    summary = dlrun.train(recipes_dir / f"{name}.yaml", ["fit.epochs=1", "tracking.log_model=false", *overrides],
                          output_root=output_root)
    assert summary.status == "FINISHED"
    return summary


@pytest.mark.parametrize("name", GRAPH_RECIPES)
def test_recipe_validates(recipes_dir, name):
    recipe = load_recipe(recipes_dir / f"{name}.yaml", require_data=False).recipe
    assert recipe.model.type == "graph"
    assert "7.1." in (recipes_dir / f"{name}.yaml").read_text().splitlines()[0]


def test_qa_two_inputs(recipes_dir, output_root, data):
    summary = _train(recipes_dir, output_root, "qa_two_inputs", f"data.path={data['qa_two_inputs']}")
    assert "final_val_accuracy" in summary.metrics


def test_three_outputs(recipes_dir, output_root, data):
    summary = _train(recipes_dir, output_root, "three_outputs", f"data.path={data['three_outputs']}",
                     "fit.batch_size=8")
    for key in ("final_val_age_mae", "final_val_income_accuracy", "final_val_gender_accuracy", "final_val_loss"):
        assert key in summary.metrics, summary.metrics


def test_inception_module(recipes_dir, output_root):
    summary = _train(recipes_dir, output_root, "inception_module", "data.limit=300")
    assert 0 <= summary.metrics["test_accuracy"] <= 1


def test_residual_blocks(recipes_dir, output_root):
    summary = _train(recipes_dir, output_root, "residual_blocks", "data.limit=300")
    assert 0 <= summary.metrics["test_accuracy"] <= 1


def test_siamese_lstm_deterministic(recipes_dir, output_root, data):
    """Named inputs also go through the seeded per-epoch feeding of deterministic mode."""
    summary = _train(recipes_dir, output_root, "siamese_lstm", f"data.path={data['siamese_lstm']}",
                     "deterministic=true", "fit.batch_size=8")
    assert "final_val_accuracy" in summary.metrics


def test_xception_siamese(recipes_dir, output_root, data):
    summary = _train(recipes_dir, output_root, "xception_siamese", f"data.path={data['xception_siamese']}",
                     "model.inputs.left.shape=[71, 71, 3]", "model.inputs.right.shape=[71, 71, 3]",
                     "fit.batch_size=4")
    facts = json.loads((Path(summary.run_dir) / "model_facts.json").read_text())
    assert list(facts["pretrained"]) == ["xception"]  # one base, made once


def test_kfold_on_named_arrays(recipes_dir, output_root, data):
    summary = _train(recipes_dir, output_root, "siamese_lstm", f"data.path={data['siamese_lstm']}",
                     "evaluation={protocol: kfold, k: 2}", "data.split.validation=none", "fit.batch_size=8")
    assert summary.status == "FINISHED"


def test_show_prints_the_graph_summary(recipes_dir, data):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "dlrun", "show", str(recipes_dir / "siamese_lstm.yaml"),
                          "--set", f"data.path={data['siamese_lstm']}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "lstm (LSTM)" in out.stdout and "left[0][0]" in out.stdout and "right[0][0]" in out.stdout
    assert "Total params: 20,673" in out.stdout


def test_show_names_the_node_of_a_shape_mismatch(recipes_dir):
    out = subprocess.run([sys.executable, "-m", "dlrun", "show", str(recipes_dir / "residual_blocks.yaml"),
                          "--set", "model.nodes.shortcut2.layer.Conv2D.strides=1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "model.nodes.block2 (Add) does not fit its inputs (pool2 (None, 4, 4, 64), shortcut2 (None, 8, 8, 64))" \
        in out.stderr + out.stdout
