"""Helpers for tests that run dlrun as a user types it and read back what a run left.

    sys.path.insert(0, str(Path(__file__).parent))
    from _runs import dlrun_cli, only_run_dir, saved_weights, spy_on_saves
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

DLRUN = str(Path(sys.executable).with_name("dlrun"))
TESTS = Path(__file__).parent


def dlrun_cli(root: Path, *args) -> subprocess.CompletedProcess:
    """``dlrun ARGS -o ROOT`` in a subprocess; the tests' folder is on its path (recipe plugins)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}
    return subprocess.run([DLRUN, *args, "-o", str(root)], capture_output=True, text=True, env=env, timeout=300)


def only_run_dir(root: Path, name: str) -> Path:
    """The one run directory of experiment ``name`` under the output root ``root``."""
    (path,) = (root / "runs" / name).iterdir()
    return path


def saved_weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(run_dir / "model.keras", safe_mode=True).get_weights()


def spy_on_saves(monkeypatch) -> list[tuple[int, int]]:
    """Every checkpoint a run in this process saves from now on, as (epochs done, batches of the next)."""
    from dlrun.training import checkpoints

    saved: list[tuple[int, int]] = []
    original = checkpoints.save_checkpoint

    def spy(job_dir, model, epoch, *args, **kwargs):
        done = original(job_dir, model, epoch, *args, **kwargs)
        state = json.loads((Path(job_dir) / "checkpoint" / "state.json").read_text())
        saved.append((state["epoch"], state["batch"]))
        return done

    monkeypatch.setattr(checkpoints, "save_checkpoint", spy)
    return saved
