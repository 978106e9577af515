"""``dlrun predict RUN INPUT -o OUT``: a trained run's model on new inputs.

The input is read in the form of the run's data (:mod:`dlrun.inference.inputs`), transformed
with the preprocessing the run fitted (read back, never refitted), predicted chunk by chunk and
written as it goes (:mod:`dlrun.inference.outputs`). Every check that can fail — the run, the
output path, the input's columns or shape — runs before the first prediction.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrun.errors import DataError

# Rows read and predicted at a time: large enough that Keras' per-call cost vanishes, small
# enough that any input streams (images are read one model batch at a time).
CHUNK_ROWS = 16384


@dataclass
class PredictResult:
    run_dir: str
    model: str
    input: str
    output: str
    rows: int
    seconds: float
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(ref: str, input_text: str, output_text: str, *, output_root: Path | str = "artifacts",
            tracking_uri: str | None = None, fold: int | None = None, top_k: int = 1,
            batch_size: int | None = None, force: bool = False, progress: bool = False) -> PredictResult:
    """Predict ``input_text`` with run ``ref``'s model into ``output_text`` (``-``: stdout)."""
    from dlrun.inference.inputs import read_inputs
    from dlrun.inference.outputs import Rows, Writer, check_output
    from dlrun.inference.trained import open_trained
    from dlrun.tf_runtime import configure_runtime

    if top_k < 1:
        raise DataError(f"--top-k must be 1 or more, got {top_k}")
    out_path = check_output(output_text, force)
    trained = open_trained(ref, Path(output_root), tracking_uri, fold=fold)
    inputs = read_inputs(trained, input_text)
    configure_runtime(trained.recipe.seed, trained.recipe.deterministic)
    batch = batch_size or trained.recipe.fit.batch_size
    chunk = batch if trained.recipe.data.source == "image_directory" else max(batch, CHUNK_ROWS)
    to_rows = Rows(trained, top_k)

    started = time.perf_counter()
    batches = inputs.batches(chunk)
    first = next(batches, None)
    if first is None:
        raise DataError(f"INPUT: {inputs.source} holds no rows to predict")
    first_model_inputs = trained.inputs(first[1])  # a transform that does not fit fails here, before writing
    writer = Writer(out_path, inputs.id_name)
    columns: list[str] = []
    try:
        with _progress(progress, inputs.total) as advance:
            pending = [(first[0], first_model_inputs)]
            for ids, model_inputs in _chain(pending, batches, trained):
                raw = _predict(trained, model_inputs, batch)
                cols = to_rows(raw)
                columns = columns or list(cols)
                writer.write(ids, cols, _readable(trained, raw))
                advance(len(ids))
        writer.close()
    except BaseException:
        writer.discard()
        raise
    return PredictResult(str(trained.job.path), str(trained.job.model_path), inputs.source,
                         "stdout" if out_path is None else str(out_path), writer.rows,
                         round(time.perf_counter() - started, 3), [inputs.id_name, *columns])


def _chain(first: list, batches, trained):
    yield from first
    for ids, x in batches:
        yield ids, trained.inputs(x)


def _predict(trained, model_inputs, batch: int):
    try:
        return trained.predict(model_inputs, batch)
    except ValueError as exc:  # Keras: inputs whose shape does not fit the model
        text = str(exc).strip().splitlines()[0][:300]
        raise DataError(f"INPUT does not fit the model of {trained.job.path}: {text}") from None


def _readable(trained, raw):
    if isinstance(raw, dict):
        return {k: trained.readable(v) for k, v in raw.items()}
    return trained.readable(raw)


class _progress:
    """A progress bar on stderr for a terminal (rows done, rate, ETA); nothing otherwise."""

    def __init__(self, enabled: bool, total: int | None):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("predict", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.stop()
        return False
