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


def _input_shape_from_data(loaded: LoadedRecipe) -> tuple:
    from dlrun.data.sources import load_dataset
    from dlrun.data.splits import apply_test_split, holdout_split
    from dlrun.data.transforms import fit_pipeline

    recipe = loaded.recipe
    ds = apply_test_split(load_dataset(recipe.data, loaded.base_dir, recipe.seed), recipe.data.split, recipe.seed)
    split = holdout_split(len(ds.y_train), recipe.data.split.validation, recipe.seed)
    x, y = ds.x_train[split.train], ds.y_train[split.train]
    x, _ = fit_pipeline(recipe.preprocessing, x, y).apply(x, y)
    return tuple(x.shape[1:])


def print_model_summary(loaded: LoadedRecipe) -> None:
    from dlrun.model.builder import build_model, compile_model
    from dlrun.tf_runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    shape = static_input_shape(loaded.recipe) or _input_shape_from_data(loaded)
    model = build_model(loaded.recipe.model, shape, name=loaded.recipe.name)
    compile_model(model, loaded.recipe.compile)
    model.summary(print_fn=lambda line, **_: print(line))
