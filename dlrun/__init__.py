"""dlrun — deep-learning experiments declared as YAML recipes, run with Keras 3, tracked in MLflow."""

__version__ = "0.1.0"

from dlrun.api import kfold, load, train  # noqa: E402  (light: no TensorFlow at import)

__all__ = ["__version__", "kfold", "load", "train"]
