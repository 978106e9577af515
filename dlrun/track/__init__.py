"""Tracking: the run directory (:mod:`.rundir`), MLflow logging (:mod:`.mlflow_store`) and
plots (:mod:`.plots`). Importing this package imports neither mlflow nor matplotlib."""
