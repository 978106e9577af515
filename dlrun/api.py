"""The Python API, for notebooks and scripts: the same runs as the CLI.

    import dlrun
    summary = dlrun.train("recipes/quickstart.yaml", overrides=["fit.epochs=3"])
    summary = dlrun.kfold("recipes/boston_housing.yaml", k=4)
    summary.metrics, summary.run_dir, summary.run_id

Importing this module stays light; TensorFlow and MLflow load when a run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from dlrun.recipe.loading import LoadedRecipe, load_recipe


def load(recipe: str | Path, overrides: Iterable[str] = (), *, allow_read: Iterable[str | Path] = (),
         allow_network: bool = False) -> LoadedRecipe:
    """Read and validate a recipe (raises :class:`dlrun.errors.RecipeError` listing every problem);
    ``allow_read``/``allow_network``: the command line's ``--allow-read``/``--allow-network``."""
    from dlrun.recipe.permissions import granted

    with granted(network=allow_network, read=allow_read):
        return load_recipe(recipe, overrides)


def kfold_overrides(
    overrides: Iterable[str] = (), *, k: int | None = None, repeats: int | None = None, refit: bool | None = None,
) -> list[str]:
    """The ``--set`` overrides that turn any recipe into a K-fold run (recorded in the run).

    ``evaluation.protocol=kfold`` goes first so the user's own ``evaluation.*`` overrides apply
    to the K-fold section (a hold-out section has no other keys to clash)."""
    extra = [f"evaluation.{key}={str(value).lower()}"
             for key, value in (("k", k), ("repeats", repeats), ("refit", refit)) if value is not None]
    return ["evaluation.protocol=kfold", *overrides, *extra]


def train(
    recipe: str | Path | None, overrides: Iterable[str] = (), *, output_root: str | Path = "artifacts",
    tracking_uri: str | None = None, reporter=None, resume: str | None = None, force: bool = False,
    allow_read: Iterable[str | Path] = (), allow_network: bool = False,
    executor: str = "serial", workers: int | None = None, gpus: str | None = None, gpus_per_job: int | None = None,
    ray_address: str | None = None, executor_profile: str | Path | None = None,
):
    """Run a recipe under its own protocol; returns a :class:`dlrun.training.runner.RunSummary`.

    ``resume``: a run directory or MLflow run id to continue from its checkpoints (``recipe``
    may then be None: the run's own recipe file); ``force`` accepts a changed recipe.
    ``allow_read``/``allow_network``: the command line's ``--allow-read``/``--allow-network``.
    ``executor`` (serial, local, ray, slurm), ``workers``, ``gpus`` ("0,1"), ``gpus_per_job``,
    ``ray_address`` and ``executor_profile``: where K-fold's folds run, as on the command line."""
    from dlrun.execution.options import ExecutorOptions, executor_for
    from dlrun.recipe.permissions import granted
    from dlrun.training.resume import load_for_run
    from dlrun.training.runner import run_recipe

    overrides = list(overrides)
    with granted(network=allow_network, read=allow_read):
        loaded, target = load_for_run(None if recipe is None else Path(recipe), overrides, Path(output_root), resume,
                                      force)
        command = ["dlrun.train", *([str(recipe)] if recipe is not None else []), *overrides,
                   *(["--resume", str(resume)] if resume is not None else [])]
        options = ExecutorOptions(executor, workers, gpus, gpus_per_job, ray_address,
                                  None if executor_profile is None else Path(executor_profile))
        with executor_for(options, output_root=Path(output_root), tracking_uri=tracking_uri, resume=target) as pool:
            return run_recipe(loaded, output_root=Path(output_root), tracking_uri=tracking_uri, reporter=reporter,
                              command=command, resume=target, executor=pool)


def kfold(
    recipe: str | Path, overrides: Iterable[str] = (), *, k: int | None = None, repeats: int | None = None,
    refit: bool | None = None, **options,
):
    """Run any recipe under K-fold cross-validation (see :func:`train` for the options)."""
    return train(recipe, kfold_overrides(overrides, k=k, repeats=repeats, refit=refit), **options)
