"""``dlrun export RUN --format keras|savedmodel|onnx|tflite -o PATH``: the run's model for serving.

The exported model holds the run's fitted preprocessing where Keras has a layer for it (see
:mod:`dlrun.inference.export_plan`), so it takes raw inputs. Before the command says it
succeeded, the export is loaded back with its own runtime and its predictions on the run's test
rows are compared with the run's model on the run's restored preprocessing (what ``dlrun
predict`` gives): a difference above the tolerance is refused. It is written under a temporary
name beside PATH and moved into place only then, so a refused or failed export leaves nothing.
``PATH.dlrun.json`` beside it says what the model takes and gives: its input signature, which
steps are inside and which the caller applies (with what they learned), the class names.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import DlrunError, UsageError
from dlrun.inference.export_plan import FORMATS
from dlrun.track.rundir import RunDir

TOLERANCE = 1e-4
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "tflite": ".tflite"}  # savedmodel: a folder
SIDECAR = ".dlrun.json"


class ExportMismatch(DlrunError):
    """The export loaded back predicts differently from the run's model: nothing is written."""


@dataclass
class ExportResult:
    path: str
    format: str
    sidecar: str
    run_dir: str
    job: str
    rows: int
    part: str
    max_abs_diff: float
    tolerance: float
    inputs: list[dict]
    outputs: list[dict]
    preprocessing: dict
    lines: list[str] = field(default_factory=list)  # the steps, one line each, for the terminal
    registered: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "lines"}


def export_run(ref: str, fmt: str, output: Path, *, output_root: Path, tracking_uri: str | None = None,
               fold: int | None = None, force: bool = False, register: str | None = None) -> ExportResult:
    """Export the model of run ``ref`` (fold ``fold``; a K-fold run's refit) as ``fmt`` to ``output``."""
    from dlrun.inference.export_check import require_packages
    from dlrun.inference.serving_mlflow import registrar
    from dlrun.inference.trained import open_trained

    output = _check_output(fmt, Path(output), force)
    require_packages(fmt)
    trained = open_trained(ref, output_root, tracking_uri, fold=fold)
    register_with = registrar(trained.job, register, output_root, tracking_uri) if register else None
    tmp = output.parent / f".{output.name}.dlrun-tmp-{secrets.token_hex(4)}{SUFFIXES.get(fmt, '')}"
    try:
        result = _export_and_check(trained, fmt, output, tmp)
        _move_into_place(tmp, output)
    finally:
        _remove(tmp)
    sidecar = Path(result.sidecar)
    RunDir(sidecar.parent).write_json(sidecar.name, _sidecar(trained, result))  # written whole or not at all
    if register_with is not None:
        result.registered = register_with(f"{fmt}:{output}")
    return result


def _check_output(fmt: str, output: Path, force: bool) -> Path:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: not a format dlrun exports (use one of {', '.join(FORMATS)})")
    suffix = SUFFIXES.get(fmt)
    if suffix and output.suffix != suffix:
        raise UsageError(f"-o {output}: a {fmt} export is a {suffix} file; name it e.g. "
                         f"{output.with_suffix(suffix).name}")
    if fmt == "savedmodel" and output.suffix in SUFFIXES.values():
        raise UsageError(f"-o {output}: a SavedModel is a folder; give a folder name without {output.suffix}")
    if (output.exists() or output.is_symlink()) and not force:
        raise UsageError(f"-o {output}: it exists already; choose another path or pass --force to replace it")
    if not output.parent.is_dir():
        raise UsageError(f"-o {output}: no such folder {output.parent}")
    return output.absolute()


def _export_and_check(trained, fmt: str, output: Path, tmp: Path) -> ExportResult:
    from dlrun.inference.export_check import load_export, write_export
    from dlrun.inference.export_rows import check_set

    check = check_set(trained, fmt)
    write_export(check.plan.model, fmt, tmp)
    loaded = load_export(fmt, tmp, tuple(trained.recipe.plugins or ()))
    got = [np.concatenate(parts) for parts in zip(*(loaded.run(batch) for batch in check.batches))]
    diff = _max_abs_diff(got, check.reference)
    of = f" of {check.part_rows}" if check.part_rows and check.part_rows > check.rows else ""
    if not diff <= TOLERANCE:
        raise ExportMismatch(
            f"the {fmt} export predicts differently from the run's model: max absolute difference {diff:.3g} on "
            f"{check.rows}{of} {check.part} rows, above {TOLERANCE:g}; nothing was written")
    return ExportResult(
        path=str(output), format=fmt, sidecar=str(output) + SIDECAR, run_dir=str(trained.run.path),
        job=trained.job.job_name, rows=check.rows, part=f"{check.part}{of}", max_abs_diff=float(diff),
        tolerance=TOLERANCE, inputs=loaded.inputs, outputs=loaded.outputs, preprocessing=check.plan.summary(),
        lines=check.plan.lines())


def _max_abs_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        raise ExportMismatch(f"the export gives outputs of shapes {[g.shape for g in got]}, the run's model "
                             f"{[w.shape for w in want]}; nothing was written")
    return max(float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0)) for g, w in zip(got, want))


def _move_into_place(tmp: Path, output: Path) -> None:
    """``tmp`` becomes ``output``; an ``output`` replaced under --force is removed only then."""
    old = None
    if output.exists() or output.is_symlink():
        old = output.parent / f".{output.name}.dlrun-old-{secrets.token_hex(4)}"
        os.replace(output, old)
    os.replace(tmp, output)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sidecar(trained, result: ExportResult) -> dict:
    """What a caller of the export needs to know, beside it."""
    import dlrun

    from dlrun.inference.serving_mlflow import outputs_meaning

    outside = {s["where"]: s for s in result.preprocessing["caller_applies"]}
    fitted = _fitted_records(trained, outside)
    return {
        "format": result.format,
        "model": Path(result.path).name,
        "run_dir": result.run_dir,
        "job": result.job,
        "mlflow_run_id": trained.job.run_id or trained.run.run_id,
        "recipe": trained.recipe.name,
        "inputs": result.inputs,
        "outputs": result.outputs,
        **outputs_meaning(trained, trained.model),
        "preprocessing": {**result.preprocessing, "caller_applies": [
            {**step, **fitted.get(step["where"], {})} for step in result.preprocessing["caller_applies"]]},
        "plugins": list(trained.recipe.plugins or []),
        "check": {"rows": result.rows, "part": result.part, "max_abs_diff": result.max_abs_diff,
                  "tolerance": result.tolerance},
        "dlrun_version": dlrun.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _fitted_records(trained, outside: dict) -> dict[str, dict]:
    """What the steps the caller applies learned (a vocabulary, a series' means), from the run."""
    records = trained.job.preprocessing()
    if not isinstance(records, list):
        return {}
    return {where: {"fitted": {k: v for k, v in record.items() if k not in outside[where]["settings"]
                               and k not in ("transform", "apply_to")}}
            for where, record in ((f"preprocessing[{i}]", r) for i, r in enumerate(records)) if where in outside}
