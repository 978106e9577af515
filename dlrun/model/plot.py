"""A picture of the model graph (``keras.utils.plot_model``), saved with the run as ``model.png``.

It needs pydot and Graphviz's ``dot`` program; where either is missing the picture is skipped
with one note per process (not one per fold). Whether they are there is found out once per
process, without importing pydot or running ``dot`` (Keras' own check renders an empty graph
every call).
"""

from __future__ import annotations

import importlib.util
import shutil
from functools import cache
from pathlib import Path

PICTURE = "model.png"
_said: set[str] = set()  # the notes given in this process


@cache
def missing() -> str | None:
    """What plot_model lacks here (``None`` when it can draw)."""
    if not any(importlib.util.find_spec(name) for name in ("pydot", "pydot_ng", "pydotplus")):
        return "pydot is not installed (pip install pydot)"
    if shutil.which("dot") is None:
        return "Graphviz's 'dot' program is not on PATH (apt install graphviz)"
    return None


def save_model_picture(model, path: Path, note=lambda text: None) -> Path | None:
    """Draw ``model`` (shapes, nested models expanded) into ``path``; None when skipped."""
    why = missing()
    if why is None:
        import keras

        try:
            keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True,
                                   expand_nested=True, dpi=96)
            return Path(path)
        except Exception as exc:  # noqa: BLE001 - a picture is never worth failing a run for
            why = f"plot_model failed: {' '.join(str(exc).split())[:200]}"
    if why not in _said:  # the same reason holds for every job of the process
        _said.add(why)
        note(f"model picture ({PICTURE}) skipped: {why}")
    return None
