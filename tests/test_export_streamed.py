"""``dlrun export`` of streamed sources: an image folder's export resizes and rescales decoded images
of any size itself; a time series' export normalizes raw windows itself (the caller cuts them);
a model TFLite cannot run (a GRU's loop needs Select-TF ops) is refused with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dlrun

sys.path.insert(0, str(Path(__file__).parent))
from _export_runs import FILES, cli, export  # noqa: E402
from test_data_images import write_image_folder  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.slow
def test_image_export_resizes_and_rescales_raw_images(tmp_path):
    import keras
    import onnxruntime

    folder = write_image_folder(tmp_path / "cats_and_dogs_small", {"train": 6, "validation": 3, "test": 3})
    run = dlrun.train(RECIPES / "dogs_vs_cats_scratch.yaml", [f"data.path={folder}", "fit.epochs=1",
                                                              "data.image_size=[64, 64]"], output_root=tmp_path / "out")
    result = export(run, "onnx", tmp_path / "model.onnx")
    print(f"images onnx: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} images")
    assert [s["step"] for s in result["preprocessing"]["inside"]] == ["resize", "rescale"]
    assert result["inputs"][0]["shape"] == [None, None, None, 3] and result["max_abs_diff"] <= 1e-4

    # The run's own view of the test images: resized to 64×64 by the data pipeline, times 1/255.
    test = keras.utils.image_dataset_from_directory(folder / "test", image_size=(64, 64), shuffle=False,
                                                    label_mode="binary", verbose=False)
    model = keras.saving.load_model(Path(run.run_dir) / "model.keras", safe_mode=True)
    want = np.concatenate([model.predict(x / 255.0, verbose=0) for x, _ in test])
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for path, expected in zip(test.file_paths, want):
        raw = keras.utils.img_to_array(keras.utils.load_img(path))[None]  # 32×32, as on disk
        (got,) = session.run(None, {name: raw})
        assert raw.shape == (1, 32, 32, 3) and abs(float(got[0, 0]) - float(expected[0])) <= 1e-4
    (other,) = session.run(None, {name: np.full((1, 50, 40, 3), 128, np.float32)})  # any size goes in
    assert other.shape == (1, 1)


COLUMNS = ["p (mbar)", "T (degC)", "rh (%)", "wv (m/s)"]


@pytest.fixture
def series(tmp_path) -> Path:
    """300 ten-minute rows: a daily temperature cycle, other columns noisy around their own level."""
    rng = np.random.default_rng(0)
    rows = 300
    table = {"Date Time": pd.date_range("2009-01-01 00:10", periods=rows, freq="10min").strftime("%d.%m.%Y %H:%M:%S")}
    for i, name in enumerate(COLUMNS):
        table[name] = rng.normal(10 * i, 1 + i, rows)
    table["T (degC)"] = 5 + 8 * np.sin(np.arange(rows) * 2 * np.pi / 144) + rng.normal(0, 0.5, rows)
    path = tmp_path / "series.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def series_run(recipe: str, path: Path, out: Path):
    return dlrun.train(RECIPES / f"{recipe}.yaml", [
        f"data.path={path}", "data.lookback=24", "data.step=1", "data.delay=4", "data.train={start: 0, end: 150}",
        "data.validation={start: 150, end: 220}", "data.test={start: 220}", "fit.batch_size=16", "fit.epochs=1",
        "fit.steps_per_epoch=2", "fit.validation_steps=2"], output_root=out)


@pytest.mark.slow
def test_timeseries_export_normalizes_raw_windows(series, tmp_path):
    import keras

    run = series_run("jena_dense", series, tmp_path / "out")
    result = export(run, "keras", tmp_path / FILES["keras"])
    print(f"time series keras: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} windows")
    assert [s["step"] for s in result["preprocessing"]["inside"]] == ["normalize"]
    assert [s["step"] for s in result["preprocessing"]["caller_applies"]] == ["window"]
    assert result["max_abs_diff"] <= 1e-4

    # Raw windows cut from the CSV (the test part starts at row 220: its first window is rows 220…243)
    # against the run's model on the same windows normalized with the training rows' statistics.
    values = pd.read_csv(series)[COLUMNS].to_numpy(np.float64)
    windows = np.stack([values[i - 24:i] for i in range(244, 250)])
    train = values[:150]
    normalized = ((windows - train.mean(axis=0)) / train.std(axis=0)).astype(np.float32)
    model = keras.saving.load_model(Path(run.run_dir) / "model.keras", safe_mode=True)
    exported = keras.saving.load_model(tmp_path / FILES["keras"], safe_mode=True)
    diff = np.abs(exported.predict(windows.astype(np.float32), verbose=0) - model.predict(normalized, verbose=0))
    assert float(diff.max()) <= 1e-4


@pytest.mark.slow
def test_a_model_tflite_cannot_run_is_refused_with_nothing_written(series, tmp_path):
    run = series_run("jena_gru", series, tmp_path / "out")
    result = cli("export", run.run_dir, "--format", "tflite", "-o", tmp_path / "model.tflite", "--output-root",
                 tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1 and "Flex delegate" in result.stderr and "savedmodel or onnx" in result.stderr
    assert not list(tmp_path.glob("*model*"))
