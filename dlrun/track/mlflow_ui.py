"""How dlrun's runs look in MLflow's web UI: which experiment view opens, which columns the runs
table shows, what is a chart and what is a fact about the run.

What the UI reads was checked in MLflow 3.17's own bundle (``mlflow/server/js/build``):

- Experiment tag ``mlflow.experimentKind``: ``custom_model_development`` marks an experiment as
  model training (runs, models), not GenAI (traces, sessions). The UI reads the tag only where
  its GenAI / Model training switch is off; MLflow 3.17 ships the switch on, and it opens every
  experiment as GenAI until the user picks Model training once (the browser keeps the choice)
  or a link carries ``?workflowType=machine_learning``. dlrun sets the tag all the same: it is
  the store's record of the kind, and what UIs without the switch go by.
- The runs table's default columns are fixed in the UI (source, models, dataset); a store cannot
  change them. It can hold *saved views* (experiment tags ``mlflow.sharedViewState.<id>``,
  listed under "Views" above the table and opened by ``?viewStateShareKey=<id>``): dlrun keeps
  one with the experiment's main metrics as columns (:data:`VIEW_ID`).
- A metric logged once is drawn as a one-bar chart. Bookkeeping numbers (:data:`BOOKKEEPING`)
  go to tags (``dlrun.best_epoch``), shown under the run's tags; metrics users sort and
  compare runs by (test, final validation, K-fold means) stay metrics.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable, Mapping

log = logging.getLogger("dlrun.track")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

# One value per run, not a measurement to chart: tags ``dlrun.<name>`` in MLflow (the run
# directory's summary.json and ``--json`` keep them with the metrics).
BOOKKEEPING = ("best_epoch", "epochs_run", "refit_epochs")

# What users sort runs by, family by family: (prefix, suffix) of the metric names.
MAIN_METRIC_FAMILIES = (("test_", ""), ("cv_val_", "_mean"), ("final_val_", ""))

VIEW_ID = "dlrun-main-metrics"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
VIEW_NAME = "dlrun: main metrics"
MAX_VIEW_METRICS = 12  # columns a table can show side by side
_UI_DEFAULT_COLUMNS = ("attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`")


def _family(key: str) -> int | None:
    """The index in :data:`MAIN_METRIC_FAMILIES` of ``key``'s family; None for other metrics."""
    return next((i for i, (prefix, suffix) in enumerate(MAIN_METRIC_FAMILIES)
                 if key.startswith(prefix) and key.endswith(suffix)), None)


def split_summary(summary: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A run's summary as (metrics, tags): :data:`BOOKKEEPING` becomes tags ``dlrun.<name>``."""
    metrics = {k: v for k, v in summary.items() if k not in BOOKKEEPING}
    tags = {f"dlrun.{k}": _plain(summary[k]) for k in BOOKKEEPING if k in summary}
    return metrics, tags


def _plain(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def main_metrics_view(current: str | None, metric_keys: Iterable[str], now_ms: int) -> str | None:
    """The value of tag :data:`VIEW_TAG`: the saved view ``current`` (its tag value, or None)
    with the main metrics among ``metric_keys`` added as columns, at most
    :data:`MAX_VIEW_METRICS`; None when nothing changes. Columns a user added are kept."""
    columns, created = list(_UI_DEFAULT_COLUMNS), now_ms
    if current:
        try:
            envelope = json.loads(current)
            columns = [str(c) for c in json.loads(envelope["state"])["selectedColumns"]]
            created = int(envelope["createdAt"])
        except (ValueError, KeyError, TypeError):
            pass  # not ours to read (another writer's format): write ours
    room = MAX_VIEW_METRICS - sum(c.startswith("metrics.") for c in columns)
    main = sorted((k for k in set(metric_keys) if _family(k) is not None),
                  key=lambda k: (_family(k), not k.endswith("loss"), k))  # test first, losses first
    new = [c for c in (f"metrics.`{k}`" for k in main) if c not in columns]
    if not new or room <= 0:
        return None
    state = {"selectedColumns": columns + new[:room]}
    return json.dumps({"name": VIEW_NAME, "createdAt": created, "updatedAt": now_ms, "state": json.dumps(state)})


def show_main_metrics(tracker, metric_keys: Iterable[str]) -> None:
    """Add the main metrics among ``metric_keys`` to the experiment's saved view. A store that
    refuses is warned about, never raised into the run."""
    try:
        experiment = tracker._call("get_experiment", tracker.experiment_id)
        if experiment is None:
            return
        value = main_metrics_view(experiment.tags.get(VIEW_TAG), metric_keys, int(time.time() * 1000))
        if value is not None:
            tracker._call("set_experiment_tag", tracker.experiment_id, VIEW_TAG, value)
    except Exception as exc:  # noqa: BLE001 - a view is a convenience, the run is recorded
        log.warning("could not update the MLflow view '%s' of experiment %s: %s", VIEW_NAME, tracker.experiment, exc)


def log_summary(tracked, summary: Mapping[str, Any]) -> None:
    """A run's summary to MLflow: metrics as metrics, bookkeeping as tags, and its main metrics
    as columns of the experiment's saved view. Nothing when ``tracked`` is None or offline."""
    if tracked is None or tracked.offline:
        return
    metrics, tags = split_summary(summary)
    tracked.log_metrics(metrics)
    tracked.set_tags(tags)
    show_main_metrics(tracked.tracker, metrics)
