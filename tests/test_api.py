"""The notebook API's recipe side (no training here: see test_train.py)."""

import dlrun
from dlrun.api import kfold_overrides


def test_kfold_overrides_keep_the_users_evaluation_settings(recipes_dir):
    overrides = kfold_overrides(["evaluation.monitor=val_accuracy", "evaluation.stratify=false"], k=3, refit=True)
    loaded = dlrun.load(recipes_dir / "quickstart.yaml", overrides)
    evaluation = loaded.resolved["evaluation"]
    assert evaluation["protocol"] == "kfold" and evaluation["k"] == 3 and evaluation["refit"] is True
    assert evaluation["monitor"] == "val_accuracy" and evaluation["stratify"] is False


def test_kfold_overrides_on_a_kfold_recipe_change_only_what_is_given(recipes_dir):
    loaded = dlrun.load(recipes_dir / "boston_housing.yaml", kfold_overrides(k=5))
    evaluation = loaded.resolved["evaluation"]
    assert evaluation["k"] == 5 and evaluation["shuffle"] is False and evaluation["monitor"] == "val_mae"


def test_the_api_functions_survive_importing_the_training_package():
    import dlrun.training.runner  # noqa: F401  (a run imports it; it must not shadow dlrun.train)

    assert callable(dlrun.train) and callable(dlrun.kfold)
