"""``dlrun show``: the resolved recipe, and the model it builds."""

from __future__ import annotations

import sys

import yaml

from dlrun.recipe.loading import LoadedRecipe
from dlrun.recipe.schema import MultiHot, PadSequences, Recipe, Reshape


def print_resolved(loaded: LoadedRecipe) -> None:
    text = f"# resolved from {loaded.path}\n" + yaml.safe_dump(loaded.resolved, sort_keys=False)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.syntax import Syntax

        Console().print(Syntax(text, "yaml"))
    else:
        print(text, end="")


def static_input_shape(recipe: Recipe) -> tuple | None:
    """The model's input shape when the recipe alone fixes it (so ``show`` needs no data)."""
    if recipe.model.type not in ("sequential", "graph"):  # a kind's parts take the data's shape
        return None
    if recipe.model.type == "graph":  # its inputs declare their shapes, or take them from the data
        layers = [n.layer for n in recipe.model.nodes.values() if n.layer] + list(recipe.model.shared.values())
        declared = all(i.shape is not None for i in recipe.model.inputs.values())
        return () if declared and not any(layer.name == "PretrainedEmbedding" for layer in layers) else None
    if any(layer.name == "PretrainedEmbedding" for layer in recipe.model.layers):
        return None  # needs the vocabulary fitted on the data
    if recipe.model.input_shape is not None:
        return tuple(recipe.model.input_shape)
    shape = None
    for step in recipe.preprocessing:
        if step.apply_to != "x":
            continue
        if isinstance(step, MultiHot):
            shape = (step.dimension,)
        elif isinstance(step, Reshape):
            shape = tuple(step.shape)
        elif isinstance(step, PadSequences):
            shape = (step.maxlen,)
    return shape


def _model_from_data(loaded: LoadedRecipe):
    """Build the model the way a run would: on the training part's transformed samples."""
    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split, holdout_split
    from dlrun.training.job import preflight_model

    recipe = loaded.recipe
    ds = load_data(recipe.data, loaded.base_dir, recipe.seed, recipe.fit.batch_size)
    split = None
    if not isinstance(ds, StreamedDataset):
        ds = apply_test_split(ds, recipe.data.split, recipe.seed)
        split = holdout_split(len(ds.y_train), recipe.data.split.validation, recipe.seed)
    return preflight_model(recipe, ds, split, loaded.base_dir)


def print_model_summary(loaded: LoadedRecipe) -> None:
    from dlrun.model.builder import build_model, compile_model
    from dlrun.tf_runtime import import_tensorflow_quietly

    if loaded.recipe.task is not None:
        print(f"no model: task {loaded.recipe.task.kind} works on its network "
              f"({'a trained run' if loaded.recipe.task.run else loaded.recipe.task.base.application})")
        return
    if loaded.recipe.model is None:
        print(f"no model: evaluation.protocol {loaded.recipe.evaluation.protocol} trains none")
        return
    import_tensorflow_quietly()
    shape = static_input_shape(loaded.recipe)
    if shape is None:
        model = _model_from_data(loaded)
    else:
        from dlrun.model.builder import BuildContext
        from dlrun.model.precision import precision_policy

        with precision_policy(loaded.recipe.fit.precision):  # the dtypes the run's layers will have
            model = build_model(loaded.recipe.model, shape, name=loaded.recipe.name,
                                context=BuildContext(base_dir=loaded.base_dir))
            compile_model(model, loaded.recipe.compile, loaded.recipe.model.type)
    model.summary(print_fn=lambda line, **_: print(line))
