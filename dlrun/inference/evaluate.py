"""``dlrun evaluate RUN DATA``: a trained run's model and fitted preprocessing on another
labelled data set, scored with the run's own compiled loss and metrics.

DATA is a file or folder in the form of the run's data (the run's data section with its path
replaced: same columns, keys, classes, image size), or a whole recipe data section written inline
(``'{source: npz, path: more.npz}'``). Every row of it is evaluated — except where the source
has its own test split (``x_test``/``y_test`` in an npz, ``test/`` of a text folder): then that
split. The result is printed, written to ``<output-root>/evaluations/<experiment>/<id>/`` and
recorded as an MLflow run in the run's experiment, tagged with the training run it evaluates.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import DataError, UsageError

EVALUATION_FILE = "evaluation.json"
_PATH_SOURCES = {"csv", "npz", "text_directory", "image_directory", "timeseries_csv"}


@dataclass
class EvaluationResult:
    run_dir: str
    model: str
    data: str
    rows: int
    metrics: dict[str, float]
    evaluation_dir: str | None = None
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_spec(trained, data_text: str) -> tuple[Any, Path]:
    """The data section to evaluate on, validated, and the folder its relative paths start from."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from dlrun.recipe.schema import DataSpec

    stripped = data_text.strip()
    if stripped.startswith("{"):
        try:
            section = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise UsageError(f"DATA: not a YAML mapping: {exc}") from None
    else:
        section = _with_path(trained, Path(data_text).expanduser().absolute())
    try:
        spec = TypeAdapter(DataSpec).validate_python(section)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"DATA: data.{where}: {first['msg']}") from None
    return spec, Path.cwd()


def _with_path(trained, path: Path) -> dict:
    """The run's own data section, reading ``path`` instead, every row of it."""
    if not path.exists():
        raise DataError(f"DATA: no such file or folder: {path}")
    section = copy.deepcopy(trained.run.resolved.get("data") or {})
    source = section.get("source")
    if source not in _PATH_SOURCES:  # embedded/keras data: labelled arrays in an npz
        if path.suffix.lower() != ".npz":
            raise DataError(f"DATA: the run's data comes from '{source}'; give an .npz with arrays x and y "
                            f"(or a data section: '{{source: npz, path: {path.name}, x: …, y: …}}')")
        return {"source": "npz", "path": str(path), "split": {"test": "none"}}
    section["path"] = str(path)
    for key in ("limit", "shuffle"):
        section.pop(key, None)
    if source in ("csv", "npz"):
        section["split"] = {"test": "dataset", "validation": "none"}
    elif source == "text_directory":
        section.update({"train": ".", "test": None} if not (path / section.get("train", "train")).is_dir() else {})
        section["split"] = {"test": "dataset" if section.get("test") else "none"}
    elif source == "image_directory":
        # Raw pixels in file order: the run's rescale and feature base are the trained model's to apply.
        section.update({"train": ".", "validation": None, "test": None, "shuffle": False, "rescale": None})
        section.pop("features", None)
    elif source == "timeseries_csv":
        section.update({"train": {"start": 0}, "validation": None, "test": None})
    return section


def evaluate(ref: str, data_text: str, *, output_root: Path | str = "artifacts", tracking_uri: str | None = None,
             fold: int | None = None, batch_size: int | None = None, track: bool = True) -> EvaluationResult:
    from dlrun.inference.trained import open_trained
    from dlrun.tf_runtime import configure_runtime

    output_root = Path(output_root).expanduser().absolute()
    trained = open_trained(ref, output_root, tracking_uri, fold=fold, compile=True)
    spec, base_dir = data_spec(trained, data_text)
    configure_runtime(trained.recipe.seed, trained.recipe.deterministic)
    batch = batch_size or trained.recipe.fit.batch_size
    data, rows = _labelled(trained, spec, base_dir, batch)
    model = trained.model
    if not getattr(model, "compiled_loss", None) and not getattr(model, "loss", None):
        raise UsageError(f"the model of {trained.job.path} was saved without its compiled loss; train it again")
    try:
        values = model.evaluate(*data, batch_size=None if len(data) == 1 else batch, verbose=0, return_dict=True)
    except ValueError as exc:
        raise DataError(f"DATA does not fit the model of {trained.job.path}: "
                        f"{str(exc).strip().splitlines()[0][:300]}") from None
    metrics = {k: float(v) for k, v in values.items()}
    if trained.recipe.data.source == "timeseries_csv":
        scale = trained.source_stats.get("target_std", 1.0)
        metrics.update({f"{k}_original_units": v * scale for k, v in list(metrics.items()) if "mae" in k})
    result = EvaluationResult(str(trained.job.path), str(trained.job.model_path), data_text, rows, metrics)
    _record(result, trained, output_root, tracking_uri, track)
    return result


def _labelled(trained, spec, base_dir: Path, batch: int) -> tuple[tuple, int]:
    """``(x, y)`` arrays ready for the model (or one tf.data pipeline) and how many rows."""
    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split

    if spec.source == "timeseries_csv":
        return _series(trained, spec, base_dir)
    ds = load_data(spec, base_dir, trained.recipe.seed, batch)
    if isinstance(ds, StreamedDataset):  # an image folder: raw pixels, the run's rescale and base applied here
        _same_classes(trained, ds.info.get("class_names"), "class folders")
        xs, ys = zip(*((trained.inputs(np.asarray(x)), np.asarray(y)) for x, y in ds.train()))
        return (np.concatenate(xs), np.concatenate(ys)), int(sum(len(y) for y in ys))
    ds = apply_test_split(ds, spec.split, trained.recipe.seed)
    x, y = (ds.x_test, ds.y_test) if ds.x_test is not None else (ds.x_train, ds.y_train)
    y = _run_labels(trained, ds.info.get("classes"), y)
    x, y = trained.targets(x, y)
    return (x, y), int(len(y))


def _same_classes(trained, found: list | None, what: str) -> None:
    expected = trained.class_names
    if found is not None and expected is not None and list(found) != list(expected):
        raise DataError(f"DATA: its {what} {list(found)} are not the run's classes {list(expected)} (in that "
                        "order): labels would mean other classes")


def _run_labels(trained, found: list | None, y: np.ndarray) -> np.ndarray:
    """Text labels of a CSV are numbered by the classes its own file holds: renumber them in
    the run's order (a class the run never saw is an error)."""
    expected = trained.run.data_info().get("classes")
    if not found or not isinstance(expected, list) or list(found) == expected:
        return y
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise DataError(f"DATA: labels {unknown} are not among the run's classes {expected}")
    return np.array([expected.index(c) for c in found], dtype=np.int64)[np.asarray(y)]


def _series(trained, spec, base_dir: Path) -> tuple[tuple, int]:
    """Windows of the new series with their targets, normalized with the run's statistics."""
    from dlrun.data.files import resolve_path
    from dlrun.inference.inputs import _csv_chunks
    from dlrun.inference.series import _values, normalized

    path = resolve_path(spec.path, base_dir)
    columns = list(trained.run.data_info().get("columns") or [])
    values = np.concatenate([_values(frame, columns, path, first)
                             for first, frame in _csv_chunks(path, spec.delimiter, 1 << 16)])
    offsets = np.arange(-spec.lookback, 0, spec.step)
    ends = np.arange(spec.lookback, len(values) - spec.delay)
    if not len(ends):
        raise DataError(f"DATA: {path} has {len(values)} rows; a window and its target need "
                        f"{spec.lookback + spec.delay + 1}")
    windows = values[ends[:, None] + (offsets[::-1] if spec.reverse else offsets)]
    target = columns.index(spec.target)
    series = normalized(trained, values[:, None, :])[:, 0, :]
    return (normalized(trained, windows), series[ends + spec.delay, target]), int(len(ends))


def _record(result: EvaluationResult, trained, output_root: Path, tracking_uri, track: bool) -> None:
    from dlrun.track.rundir import RunDir, safe_name, utc_now

    experiment = trained.recipe.tracking.experiment or trained.recipe.name
    parent = output_root / "evaluations" / safe_name(experiment, "experiment")
    parent.mkdir(parents=True, exist_ok=True)
    folder = RunDir(parent / f"{utc_now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
    folder.path.mkdir()
    result.evaluation_dir = str(folder.path)
    tracked = None
    if track:
        from dlrun.track.mlflow_store import Tracker

        tracker = Tracker.from_output_root(output_root, experiment, tracking_uri or trained.run.status.get("tracking_uri"))
        tags = {"dlrun.evaluation": "true", "dlrun.recipe": trained.recipe.name,
                "dlrun.evaluation_of": trained.job.run_id or str(trained.job.path),
                "dlrun.evaluation_data": result.data, "dlrun.evaluation_dir": str(folder.path),
                "dlrun.model": result.model}
        tracked = tracker.start_run(f"{trained.recipe.name}-evaluation-{folder.path.name.rsplit('-', 1)[-1]}", tags)
        tracked.log_metrics({**result.metrics, "rows": result.rows})
        result.mlflow_run_id = tracked.run_id
    folder.write_json(EVALUATION_FILE, result.to_dict())
    if tracked is not None:
        tracked.log_artifact(folder.file(EVALUATION_FILE))
        tracked.end("FINISHED")
