"""``dlrun export``: each format, loaded back with its own runtime, predicts from raw rows what the
run's model predicts from the run's restored preprocessing of them (``dlrun predict``).

Two real runs: digits (8×8 images → reshape, rescale, standardize: every step inside the export)
and tiny reviews (strings → text_vectorization: inside for keras/savedmodel, left to the caller
for onnx/tflite, which have no string ops). The tests load each export with the format's runtime
themselves, not with dlrun's code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_runs import (FILES, PADDED, cli, dlrun_predicts, export, raw_test_rows, run_export,  # noqa: E402
                          text_run_in)
from _export_runs import digits_run, root, text_run  # noqa: E402, F401 - the module's fixtures


# --------------------------------------------------------------------------- every format


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FILES))
def test_digits_export_takes_raw_images_and_agrees(fmt, digits_run, tmp_path):
    result = export(digits_run, fmt, tmp_path / FILES[fmt])
    print(f"digits {fmt}: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} rows ({result['part']})")
    assert result["max_abs_diff"] <= 1e-4 and result["rows"] == 256 and result["part"] == "test of 360"
    assert [s["step"] for s in result["preprocessing"]["inside"]] == ["reshape", "rescale", "standardize"]
    assert result["preprocessing"]["caller_applies"] == [] and result["inputs"][0]["shape"] == [None, 8, 8]

    x = raw_test_rows(digits_run).astype(np.float32)  # raw 8×8 pixel values 0..16
    got = run_export(fmt, tmp_path / FILES[fmt], x)
    diff = float(np.abs(got - dlrun_predicts(digits_run, x)).max())
    print(f"digits {fmt}: loaded back here, all {len(x)} test rows: max abs difference {diff:.3g}")
    assert got.shape == (len(x), 10) and diff <= 1e-4

    sidecar = json.loads((tmp_path / (FILES[fmt] + ".dlrun.json")).read_text())
    assert sidecar["class_names"] == [str(i) for i in range(10)]
    assert sidecar["output_kind"] == {"prediction": {"kind": "one_hot", "from_logits": False}}
    assert sidecar["preprocessing"]["label_transforms"] == ["one_hot (preprocessing[3])"]
    assert sidecar["check"]["max_abs_diff"] == result["max_abs_diff"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([FILES[fmt], FILES[fmt] + ".dlrun.json"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FILES))
def test_text_export_has_the_vocabulary_inside_where_the_format_has_string_ops(fmt, text_run, tmp_path):
    result = export(text_run, fmt, tmp_path / FILES[fmt])
    print(f"text {fmt}: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} rows")
    assert result["max_abs_diff"] <= 1e-4
    x = raw_test_rows(text_run)
    sidecar = json.loads((tmp_path / (FILES[fmt] + ".dlrun.json")).read_text())
    if fmt in ("keras", "savedmodel"):  # raw strings in
        assert [s["step"] for s in result["preprocessing"]["inside"]] == ["text_vectorization"]
        assert result["inputs"][0]["dtype"] == "string"
        model_input = x.astype(object)
    else:  # ONNX and TFLite have no string ops: the caller vectorizes with the saved vocabulary
        (outside,) = sidecar["preprocessing"]["caller_applies"]
        assert outside["step"] == "text_vectorization" and "string ops" in outside["why"]
        vocabulary = outside["fitted"]["vocabulary"]
        assert vocabulary[:2] == ["", "[UNK]"] and result["inputs"][0]["dtype"] == "int32"
        import keras

        layer = keras.layers.TextVectorization(vocabulary=vocabulary, output_sequence_length=10)
        model_input = np.asarray(layer(x)).astype(np.int32)
    got = run_export(fmt, tmp_path / FILES[fmt], model_input)
    diff = float(np.abs(got - dlrun_predicts(text_run, x)).max())
    print(f"text {fmt}: loaded back here: max abs difference {diff:.3g}")
    assert diff <= 1e-4


@pytest.mark.slow
def test_steps_without_a_layer_stay_with_the_caller(root, tmp_path):
    """text_vectorization without a length, then pad_sequences (no layer): the export starts after both."""
    run = text_run_in(root, "reviews_padded", PADDED)
    result = export(run, "keras", tmp_path / "model.keras")
    outside = result["preprocessing"]["caller_applies"]
    assert [s["step"] for s in outside] == ["text_vectorization", "pad_sequences"]
    assert all("variable-length" in step["why"] for step in outside)
    assert result["preprocessing"]["inside"] == [] and result["inputs"][0]["shape"] == [None, 12]
    sidecar = json.loads((tmp_path / "model.keras.dlrun.json").read_text())
    assert len(sidecar["preprocessing"]["caller_applies"][0]["fitted"]["vocabulary"]) > 10


# --------------------------------------------------------------------------- refusals


def test_an_existing_output_is_refused_unless_forced(digits_run, tmp_path):
    (tmp_path / "model.onnx").write_text("mine")
    result = cli("export", digits_run.run_dir, "--format", "onnx", "-o", tmp_path / "model.onnx", cwd=tmp_path)
    assert result.returncode == 2 and "exists already" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "model.onnx").read_text() == "mine"
    result = cli("export", digits_run.run_dir, "--format", "tflite", "-o", tmp_path / "model.onnx", cwd=tmp_path)
    assert result.returncode == 2 and ".tflite file" in result.stderr


@pytest.mark.slow
def test_force_replaces_an_export(digits_run, tmp_path):
    (tmp_path / "model.onnx").write_text("old")
    export(digits_run, "onnx", tmp_path / "model.onnx", "--force")
    assert (tmp_path / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.dlrun.json"]


def test_an_export_that_differs_is_refused_and_leaves_nothing(digits_run, tmp_path, monkeypatch):
    from dlrun.inference import export as export_module

    monkeypatch.setattr(export_module, "TOLERANCE", 0.0)  # float32 round-off is then a difference
    with pytest.raises(export_module.ExportMismatch, match=r"max absolute difference .* nothing was written"):
        export_module.export_run(digits_run.run_dir, "keras", tmp_path / "model.keras",
                                 output_root=Path(digits_run.run_dir).parents[2])
    assert list(tmp_path.iterdir()) == []
