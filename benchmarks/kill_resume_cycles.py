"""Kill/resume cycles: one deterministic run SIGTERMed again and again at random moments, resumed
each time, against a twin that was never stopped.

Each cycle starts `dlrun train` (the first) or `dlrun train --resume RUN`, waits until that
process has saved a new checkpoint (so every cycle makes progress), waits a random 0–0.4 s
more, and sends SIGTERM; the process must exit 143 with the run KILLED. When a cycle ends on
its own (exit 0) the run is compared with the twin: final metrics, every weight, history.csv,
and MLflow's steps for every metric (1..epochs, none missing, none twice).

    python benchmarks/kill_resume_cycles.py                 # iris, 6 epochs, checkpoint_steps 5
    python benchmarks/kill_resume_cycles.py --steps 0       # whole-epoch checkpoints only
    python benchmarks/kill_resume_cycles.py --steps 0 --every 2   # a save at most every 2 s, and at each stop
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _recipes import resumable_iris_recipe  # noqa: E402

DLRUN = str(Path(sys.executable).with_name("dlrun"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _state(run_dir: Path | None) -> tuple[int, int] | None:
    try:
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        return state["epoch"], state.get("batch", 0)
    except (OSError, ValueError, TypeError):
        return None


def _one_cycle(args: list[str], root: Path, name: str, rng: random.Random) -> tuple[int, tuple | None]:
    """Run ``dlrun args``; SIGTERM it a moment after it saved a new checkpoint. Returns (exit code, state)."""
    runs = root / "runs" / name
    before = _state(next(runs.iterdir())) if runs.is_dir() else None
    proc = subprocess.Popen([DLRUN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    while proc.poll() is None:
        run_dir = next(runs.iterdir(), None) if runs.is_dir() else None
        now = _state(run_dir) if run_dir else None
        if now is not None and now != before:
            time.sleep(rng.uniform(0, 0.4))
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, 143):
        raise SystemExit(f"cycle failed with exit {proc.returncode}:\n{err}")
    return proc.returncode, _state(next(runs.iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5, help="fit.checkpoint_steps (0: whole epochs only)")
    parser.add_argument("--every", type=float, default=0,
                        help="fit.checkpoint_every in seconds (0: a save after every epoch, so every cycle gains one)")
    parser.add_argument("--seed", type=int, default=0, help="of the kill times")
    parser.add_argument("--max-cycles", type=int, default=60)
    options = parser.parse_args()

    import keras
    import numpy as np
    from mlflow import MlflowClient

    rng = random.Random(options.seed)
    root = Path(tempfile.mkdtemp(prefix="dlrun-cycles-"))
    fit = f"checkpoint_every: {options.every}\n" + (f"checkpoint_steps: {options.steps}" if options.steps else "")
    recipe = root / "cycled.yaml"
    recipe.write_text(resumable_iris_recipe("cycled", epochs=options.epochs, fit=fit))
    twin_recipe = root / "twin.yaml"
    twin_recipe.write_text(resumable_iris_recipe("twin", epochs=options.epochs, fit=fit))

    started = time.perf_counter()
    kills, mid_epoch, states = 0, 0, []
    args = ["train", str(recipe), "-o", str(root)]
    for _ in range(options.max_cycles):
        code, state = _one_cycle(args, root, "cycled", rng)
        if code == 0:
            break
        kills += 1
        mid_epoch += bool(state and state[1])
        states.append(state)
        args = ["train", "--resume", str(next((root / "runs" / "cycled").iterdir())), "-o", str(root)]
    else:
        raise SystemExit(f"not finished after {options.max_cycles} cycles")
    seconds = time.perf_counter() - started

    twin = subprocess.run([DLRUN, "train", str(twin_recipe), "-o", str(root), "--json"], capture_output=True,
                          text=True, env=ENV, check=True)
    run_dir, twin_dir = (next((root / "runs" / n).iterdir()) for n in ("cycled", "twin"))
    status = json.loads((run_dir / "run.json").read_text())
    twin_summary = json.loads(twin.stdout)
    weights = [keras.saving.load_model(d / "model.keras", safe_mode=True).get_weights() for d in (run_dir, twin_dir)]
    same_weights = all(np.array_equal(a, b) for a, b in zip(*weights))
    same_metrics = json.loads((run_dir / "metrics.json").read_text()) == json.loads((twin_dir / "metrics.json").read_text())
    same_history = (run_dir / "history.csv").read_text() == (twin_dir / "history.csv").read_text()
    client = MlflowClient(twin_summary["tracking_uri"])
    keys = client.get_run(status["mlflow_run_id"]).data.metrics
    steps_ok = all(sorted(m.step for m in client.get_metric_history(status["mlflow_run_id"], key))
                   == list(range(1, options.epochs + 1)) for key in ("loss", "val_loss", "accuracy"))
    print(f"{kills} SIGTERMs ({mid_epoch} saved inside an epoch) and {kills} resumes in {seconds:.0f} s; "
          f"run {status['status']}, {len(keys)} MLflow metrics")
    print(f"checkpoints at the kills (epochs done, batches of the next): {states}")
    print(f"equal to the uninterrupted twin: weights {same_weights}, final metrics {same_metrics}, "
          f"history.csv {same_history}; MLflow steps 1..{options.epochs} once each: {steps_ok}")
    if not (same_weights and same_metrics and same_history and steps_ok and status["status"] == "FINISHED"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
