"""Evaluate an ensemble: members' test predictions → average → the recipe's loss and metrics.

Weights (``--fit-weights``) never look at the test split. Where the members share training
rows none of them trained on (runs with the same hold-out validation part), the weights that
minimize the recipe's loss of the weighted average on those rows are fitted. K-fold fold models
share no such rows (every row trained k−1 of them), so each fold is weighted by the inverse of
its loss on its own validation fold — an out-of-fold score.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.ensembling.combine import (Scorer, average, fit_weights_inverse_loss, fit_weights_shared,
                                      parse_weights)
from dlrun.ensembling.members import Member, resolve_members
from dlrun.errors import DataError, UsageError

try:  # named arrays (graph models' inputs) → dicts for Keras, as the training job feeds them
    from dlrun.data.dataset import plain as _plain
except ImportError:  # pragma: no cover - a dlrun without graph data
    def _plain(part):
        return part

ENSEMBLE_FILE = "ensemble.json"
MIN_SHARED_ROWS = 2


@dataclass
class EnsembleResult:
    recipe: str
    members: list[dict[str, Any]]  # label, run_dir, model, weight, metrics
    ensemble: dict[str, float]  # test_<loss/metric> of the averaged predictions
    members_mean: dict[str, float]
    weights: list[float]
    method: str  # mean | weighted
    weights_from: str  # equal | given | what they were fitted on
    n_test: int
    ensemble_dir: str | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "method": self.method, "weights_from": self.weights_from,
                "weights": self.weights, "n_test": self.n_test, "ensemble": self.ensemble,
                "members_mean": self.members_mean, "members": self.members, "ensemble_dir": self.ensemble_dir,
                "mlflow_run_id": self.run_id, **self.extra}


class _Data:
    """Each distinct (data section, seed, recipe folder) loaded once, its test split applied."""

    def __init__(self):
        self._cache: dict[tuple, Any] = {}

    def of(self, member: Member):
        from dlrun.data.dataset import StreamedDataset
        from dlrun.data.sources import load_data
        from dlrun.data.splits import apply_test_split

        recipe = member.recipe
        key = (str(member.resolved.get("data")), recipe.seed, str(member.base_dir))
        if key not in self._cache:
            ds = load_data(recipe.data, member.base_dir, recipe.seed, recipe.fit.batch_size)
            if isinstance(ds, StreamedDataset):
                raise UsageError(f"'{member.label}': its data is streamed ({recipe.data.source}); dlrun ensemble "
                                 "needs in-memory data (arrays, CSV, npz, embedded, text)")
            ds = apply_test_split(ds, recipe.data.split, recipe.seed)
            if ds.x_test is None:
                raise UsageError(f"'{member.label}': its recipe has no test split (data.split.test: none): "
                                 "there is nothing to evaluate the ensemble on")
            self._cache[key] = ds
        return self._cache[key]


def _same(a, b) -> bool:
    """Equal arrays (or equal named arrays: a graph model's inputs)."""
    if hasattr(a, "items") or hasattr(b, "items"):
        a, b = dict(a.items()) if hasattr(a, "items") else a, dict(b.items()) if hasattr(b, "items") else b
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            _same(a[k], b[k]) for k in a)
    try:
        return a.shape == b.shape and bool(np.array_equal(a, b))
    except (TypeError, ValueError):
        return False


class _Prepared:
    """One member's model and the preprocessing its run fitted (read back, never refitted)."""

    def __init__(self, member: Member, ds):
        from dlrun.inference.trained import TrainedModel

        self.member, self.ds = member, ds
        rows = np.arange(len(ds.y_train)) if member.train is None else member.train
        if len(rows) and rows.max() >= len(ds.y_train):
            raise DataError(f"'{member.label}': its recorded training rows go past the {len(ds.y_train)} rows "
                            "its data has now: the data changed since it was trained")
        trained = TrainedModel(member.job)
        self.pipeline, self.model = trained.pipeline, trained.model

    def predict(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x, y = _plain(self.pipeline.apply(x, y))  # named inputs reach Keras as a dict, as in training
        out = self.model.predict(x, batch_size=self.member.recipe.fit.batch_size, verbose=0)
        if isinstance(out, (list, tuple, dict)):
            raise UsageError(f"'{self.member.label}' has several outputs: ensembles of multi-output models "
                             "are not supported yet")
        return np.asarray(out), np.asarray(y)

    def predict_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(self.ds.x_train[rows], self.ds.y_train[rows])


def _check_test_sets(members: list[Member], datasets: list) -> None:
    first = datasets[0]
    for member, ds in zip(members[1:], datasets[1:]):
        if ds is not first and not (_same(ds.y_test, first.y_test) and _same(ds.x_test, first.x_test)):
            raise UsageError(f"members tested on different rows: '{members[0].label}' and '{member.label}' "
                             f"(seed {members[0].recipe.seed} vs {member.recipe.seed} draws a different "
                             "test split or order); ensemble runs of the same data and test split")


def _shared_rows(members: list[Member], n: int) -> np.ndarray:
    """Training rows no member trained on (a validation part they all held out)."""
    used = np.zeros(n, dtype=bool)
    for member in members:
        if member.train is None:
            return np.array([], dtype=int)
        used[member.train] = True
    return np.flatnonzero(~used)


def _fitted_weights(members, prepared, scorer, n_train) -> tuple[np.ndarray, str]:
    shared = _shared_rows(members, n_train)
    if len(shared) >= MIN_SHARED_ROWS:
        preds, ys = zip(*(p.predict_rows(shared) for p in prepared))
        return fit_weights_shared(scorer, preds, ys[0]), \
            f"fitted: recipe loss minimized on {len(shared)} validation rows no member trained on"
    missing = [m.label for m in members if m.validation is None or not len(m.validation)]
    if missing:
        raise UsageError(f"--fit-weights: no validation data to fit weights on: {', '.join(missing)} kept no "
                         "validation rows and the members share no held-out rows; give --weights instead")
    losses = [scorer.loss(*p.predict_rows(m.validation)) for m, p in zip(members, prepared)]
    return fit_weights_inverse_loss(losses), "fitted: 1/loss of each member on its own validation (out-of-fold) rows"


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"test_{k}": v for k, v in metrics.items()}


def ensemble(refs: list[str], *, weights: str | list[float] | None = None, fit_weights: bool = False,
             output_root: str | Path = "artifacts", tracking_uri: str | None = None, track: bool = True,
             ) -> EnsembleResult:
    """Evaluate the ensemble of ``refs`` on their shared test split; record ``ensemble.json``."""
    from dlrun.tf_runtime import configure_runtime

    output_root = Path(output_root).expanduser().absolute()
    if weights is not None and fit_weights:
        raise UsageError("give either --weights or --fit-weights, not both")
    members = resolve_members(list(refs), output_root, tracking_uri)
    if weights is not None and not isinstance(weights, str):
        weights = ",".join(str(w) for w in weights)
    given = parse_weights(weights, len(members))
    first = members[0].recipe
    configure_runtime(first.seed, first.deterministic)

    data = _Data()
    datasets = [data.of(m) for m in members]
    _check_test_sets(members, datasets)
    prepared = [_Prepared(m, ds) for m, ds in zip(members, datasets)]
    preds, ys = zip(*(p.predict(ds.x_test, ds.y_test) for p, ds in zip(prepared, datasets)))
    y = ys[0]
    for member, other, pred in zip(members, ys, preds):
        if not _same(other, y) and not (other.shape == y.shape and np.allclose(other, y)):
            raise UsageError(f"'{member.label}': its test targets differ from '{members[0].label}''s after "
                             "preprocessing (different label transforms)")
        if pred.shape != preds[0].shape:
            raise UsageError(f"'{member.label}' predicts shape {pred.shape[1:]}, '{members[0].label}' "
                             f"{preds[0].shape[1:]}: their outputs cannot be averaged")
    scorer = Scorer(first.compile, preds[0].shape[1:])
    if given is not None:
        w, source = given, "given"
    elif fit_weights:
        w, source = _fitted_weights(members, prepared, scorer, len(datasets[0].y_train))
    else:
        w, source = np.full(len(members), 1.0 / len(members)), "equal"
    rows = [{"label": m.label, "run_dir": str(m.run_dir), "model": str(m.model_path), "mlflow_run_id": m.run_id,
             "weight": float(wi), "metrics": _prefixed(scorer(p, y))} for m, wi, p in zip(members, w, preds)]
    keys = rows[0]["metrics"]
    result = EnsembleResult(
        recipe=first.name, members=rows, ensemble=_prefixed(scorer(average(preds, w), y)),
        members_mean={k: float(np.mean([r["metrics"][k] for r in rows])) for k in keys},
        weights=[float(v) for v in w], method="mean" if source == "equal" else "weighted", weights_from=source,
        n_test=int(len(y)),
    )
    _record(result, members, output_root, tracking_uri, track)
    return result


def _record(result: EnsembleResult, members: list[Member], output_root: Path, tracking_uri, track: bool) -> None:
    from dlrun.track.rundir import RunDir, safe_name, utc_now

    experiment = members[0].recipe.tracking.experiment or members[0].recipe.name
    parent = output_root / "ensembles" / safe_name(experiment, "experiment")
    parent.mkdir(parents=True, exist_ok=True)
    folder = RunDir(parent / f"{utc_now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
    folder.path.mkdir()
    result.ensemble_dir = str(folder.path)
    tracked = _start_mlflow(result, members, output_root, experiment, tracking_uri, folder) if track else None
    result.run_id = getattr(tracked, "run_id", None)
    folder.write_json(ENSEMBLE_FILE, result.to_dict())
    if tracked is not None:
        tracked.log_artifact(folder.file(ENSEMBLE_FILE))
        tracked.end("FINISHED")


def _start_mlflow(result: EnsembleResult, members: list[Member], output_root, experiment, tracking_uri, folder):
    """One MLflow run per ensemble: its members as tags, its scores as metrics."""
    from dlrun.track.mlflow_store import Tracker

    tracker = Tracker.from_output_root(output_root, experiment, tracking_uri)
    tags = {"dlrun.ensemble": "true", "dlrun.recipe": result.recipe, "dlrun.ensemble_dir": str(folder.path),
            "dlrun.ensemble.weights_from": result.weights_from,
            "dlrun.ensemble.members": ",".join(m.run_id or str(m.model_path.parent) for m in members)}
    for i, m in enumerate(members, 1):
        tags[f"dlrun.ensemble.member_{i}"] = f"{m.label} {m.run_id or ''} {m.model_path.parent}".strip()
    tracked = tracker.start_run(f"{result.recipe}-ensemble-{folder.path.name.rsplit('-', 1)[-1]}", tags)
    tracked.log_params({f"weight_{i}": w for i, w in enumerate(result.weights, 1)})
    tracked.log_metrics({**result.ensemble, **{f"members_mean_{k}": v for k, v in result.members_mean.items()}})
    return tracked
