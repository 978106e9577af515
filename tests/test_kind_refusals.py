"""What a model kind or a task cannot do is refused when the recipe is read — located, with the
fix, every problem at once, without TensorFlow: a VAE or GAN under K-fold or with a loss or
metrics, a learning-rate callback on a GAN, samples where nothing generates, a plugin class from
a module the recipe does not list, training sections in a task recipe. A saved (resolved) recipe
of each new kind reads back as valid."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe

ROOT = Path(__file__).resolve().parent.parent
DIGITS = "data: {source: embedded, name: digits}\n"
VAE = """\
model:
  type: vae
  encoder: [Flatten, {Dense: {units: 16}}]
  decoder: [{Dense: {units: 64}}, {Reshape: {target_shape: [8, 8, 1]}}]
"""
GAN = """\
model:
  type: gan
  latent_dim: 4
  generator: [{Dense: {units: 64, activation: tanh}}, {Reshape: {target_shape: [8, 8, 1]}}]
  discriminator: [Flatten, {Dense: {units: 1, activation: sigmoid}}]
"""


def _problems(tmp_path: Path, *parts: str) -> list[str]:
    """The located problems of the recipe made of ``parts`` (YAML blocks, each dedented)."""
    path = tmp_path / "r.yaml"
    path.write_text("".join(textwrap.dedent(part) for part in parts))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    return [f"{issue.location.line}:{issue.path}: {issue.message}" for issue in caught.value.issues]


def _one(problems: list[str], where: str, words: str) -> None:
    found = [p for p in problems if p.split(": ", 1)[0].split(":", 1)[1] == where]
    assert found and words in found[0], problems


def test_a_vae_refuses_kfold_a_loss_metrics_a_generator_optimizer_and_text_samples(tmp_path):
    problems = _problems(tmp_path, "name: v\n", DIGITS, VAE, """\
        compile:
          loss: mse
          metrics: [accuracy]
          generator_optimizer: adam
        evaluation: {protocol: kfold}
        samples: {length: 10}
        """)
    assert len(problems) == 5, problems
    _one(problems, "compile.loss", "a VAE takes no compile.loss: its loss is the reconstruction loss plus kl_weight")
    _one(problems, "compile.metrics", "a VAE takes no compile.metrics")
    _one(problems, "compile.generator_optimizer", "only a GAN (model.type: gan) or a plugin model has a generator")
    _one(problems, "evaluation.protocol", "a VAE runs under protocol holdout only")
    _one(problems, "samples.length", "applies to text (data.source text_chars) only")
    assert any(p.startswith("8:compile.loss") for p in problems), problems  # its line in the file


def test_a_gan_refuses_learning_rate_callbacks_fine_tuning_text_data_and_names_its_layers(tmp_path):
    problems = _problems(tmp_path, "name: g\ndata: {source: text_chars, path: t.txt}\n", GAN, """\
        compile: {optimizer: adam, generator_optimizer: {Adamm: {}}}
        fit:
          callbacks: [ReduceLROnPlateau, {LearningRateScheduler: {schedule: cosine, initial_learning_rate: 0.1}}]
          fine_tune: {layer: x, unfreeze_from: y, optimizer: adam, epochs: 1}
        samples: {latent_grid: 4}
        """)
    _one(problems, "fit.callbacks[0]", "ReduceLROnPlateau changes model.optimizer's learning rate, and a GAN has two "
                                       "optimizers: give each a schedule instead")
    _one(problems, "fit.callbacks[1]", "LearningRateScheduler changes model.optimizer's learning rate")
    _one(problems, "fit.fine_tune", "a GAN has no fine-tuning stage")
    _one(problems, "data.source", "a GAN learns from images: data.source text_chars gives no images")
    _one(problems, "compile.generator_optimizer.Adamm", "unknown optimizer 'Adamm' — did you mean 'Adam'?")
    _one(problems, "samples.latent_grid", "applies to generated images (vae, gan, plugin) only")


def test_layers_of_a_kinds_parts_are_checked_against_keras(tmp_path):
    problems = _problems(tmp_path, "name: v\n", DIGITS, """\
        model:
          type: vae
          encoder: [Flatten, {Dense: {unit: 16}}]
          decoder: [{Dens: {units: 64}}]
        compile: {optimizer: rmsprop}
        """)
    _one(problems, "model.encoder[1].Dense.unit", "Dense has no argument 'unit' — did you mean 'units'?")
    _one(problems, "model.decoder[0].Dens", "unknown layer 'Dens' — did you mean 'Dense'?")


def test_samples_need_something_that_generates_and_layer_models_need_a_loss(tmp_path):
    problems = _problems(tmp_path, "name: s\n", DIGITS, """\
        model: {layers: [Flatten, {Dense: {units: 10}}]}
        compile: {optimizer: adam}
        samples: {}
        """)
    _one(problems, "compile", "missing required key 'loss'")
    _one(problems, "samples", "nothing here generates samples")


def test_a_plugin_class_must_come_from_a_listed_module(tmp_path):
    problems = _problems(tmp_path, "name: p\nplugins: [my_models]\n", DIGITS, """\
        model: {type: plugin, class: other_models:Net}
        compile: {optimizer: adam}
        """)
    _one(problems, "model.class", "module 'other_models' is not listed under plugins (it lists: my_models)")
    problems = _problems(tmp_path, "name: p\n", DIGITS, """\
        model: {type: plugin, class: "not a class"}
        compile: {optimizer: adam}
        """)
    assert any("model.class" in p and "should match pattern" in p for p in problems), problems


def test_a_task_recipe_has_no_training_sections_and_one_network(tmp_path):
    problems = _problems(tmp_path, "name: t\n", DIGITS, """\
        fit: {epochs: 3}
        task:
          kind: explain
          base: {application: VGG16}
          run: some_run
          activations: {}
        """)
    _one(problems, "data", "a task recipe (explain) trains nothing: leave out 'data'")
    _one(problems, "fit", "leave out 'fit'")
    _one(problems, "task", "give exactly one of 'base' (a keras.applications network) or 'run' (a trained run)")
    problems = _problems(tmp_path, """\
        name: t
        task: {kind: explain, run: r, grad_cam: {}}
        """)
    _one(problems, "task", "activations and grad_cam look at an image: give 'image'")
    problems = _problems(tmp_path, """\
        name: t
        task: {kind: style_transfer, run: r, content_image: a.png, style_image: b.png, optimizer: lbfgs,
               learning_rate: 0.1}
        """)
    _one(problems, "task", "learning_rate applies to optimizer sgd or adam")


def test_without_a_task_data_is_required(tmp_path):
    problems = _problems(tmp_path, """\
        name: n
        model: {layers: [Flatten]}
        compile: {loss: mse}
        """)
    assert any("missing required key 'data' (or a 'task' that needs none)" in p for p in problems), problems


@pytest.mark.parametrize("name", ["vae_mnist", "gan_cifar10_frogs", "textgen_nietzsche", "deep_dream",
                                  "style_transfer", "visualize_activations", "visualize_filters", "grad_cam"])
def test_the_saved_resolved_recipe_of_each_new_recipe_reads_back(tmp_path, name):
    """A run saves its recipe resolved (every default written out); --resume and the run reader
    read it again: the kinds' and tasks' checks must take the defaults for what they are."""
    import yaml

    loaded = load_recipe(ROOT / "recipes" / f"{name}.yaml", require_data=False)
    saved = tmp_path / f"{name}.yaml"
    saved.write_text(yaml.safe_dump(loaded.resolved, sort_keys=False))
    again = load_recipe(saved, require_data=False)
    assert again.resolved == loaded.resolved


def test_validate_reports_them_from_the_command_line_without_tensorflow(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\n{DIGITS}{GAN}compile: {{optimizer: adam, loss: mse, metrics: [accuracy]}}\n")
    code = ("import sys; from dlrun.cli import main; sys.argv = ['dlrun', 'validate', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"{path}:8:28: compile.loss: a GAN takes no compile.loss" in result.stderr
    assert "compile.metrics: a GAN takes no compile.metrics" in result.stderr
    assert "2 problems in the recipe" in result.stderr or "1 of 1 recipe invalid" in result.stderr
