"""The book's Boston K-fold (3.6: 4 folds, here 80 epochs of batch 16, validation every epoch)
three ways, as a user runs them — each a fresh process with a fresh output root, back to back,
the order alternating every round:

- a plain Keras script (the same data in Keras' order, the same 4 unshuffled folds, each
  standardized with its training part's statistics, the same model, seeded alike);
- ``dlrun kfold recipes/boston_housing.yaml --set fit.epochs=80 --set fit.batch_size=16``;
- the same with ``--workers 2`` (two local worker processes).

Then ``dlrun tune recipes/boston_tuning.yaml --trials N`` serially and with ``--workers 2``:
trials per minute. Usage and results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _alternating import measure_in_turns  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PLAIN = r'''
import json, sys, time
import numpy as np
import keras
from mlxtend.data import boston_housing_data

epochs, batch_size, k, seed = (int(a) for a in sys.argv[1:5])
folds = [int(i) for i in sys.argv[5].split(",")] if len(sys.argv) > 5 else range(k)  # a share of the folds
x, y = boston_housing_data()  # keras.datasets.boston_housing.load_data(), offline: same rows, same order
order = np.arange(len(x))
np.random.RandomState(113).shuffle(order)
x, y = x[order].astype("float32"), y[order].astype("float32")
x_train, y_train = x[: int(len(x) * 0.8)], y[: int(len(x) * 0.8)]
size = len(x_train) // k
maes = []
for i in folds:  # Listing 3.27
    val = np.arange(i * size, (i + 1) * size)
    train = np.setdiff1d(np.arange(len(x_train)), val)
    mean, std = x_train[train].mean(axis=0), x_train[train].std(axis=0)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="rmsprop", loss="mse", metrics=["mae"])
    model.fit((x_train[train] - mean) / std, y_train[train], epochs=epochs, batch_size=batch_size, verbose=0,
              validation_data=((x_train[val] - mean) / std, y_train[val]))
    maes.append(model.evaluate((x_train[val] - mean) / std, y_train[val], verbose=0, return_dict=True)["mae"])
print(json.dumps({"fold_val_mae": maes}))
'''

# The plain script's folds shared out over N processes started together: what the machine itself
# gives two processes (each imports TensorFlow and traces its functions), the ceiling for --workers.
PLAIN_SPLIT = r'''
import json, subprocess, sys
script, processes, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
k = int(args[2])
shares = [",".join(str(i) for i in range(k) if i % processes == p) for p in range(processes)]
procs = [subprocess.Popen([sys.executable, script, *args, share], stdout=subprocess.PIPE, text=True) for share in shares]
maes = {}
for share, proc in zip(shares, procs):
    maes.update(zip(share.split(","), json.loads(proc.communicate()[0].strip().splitlines()[-1])["fold_val_mae"]))
    assert proc.returncode == 0
print(json.dumps({"fold_val_mae": [maes[str(i)] for i in range(k)]}))
'''


def _run(cmd: list[str], cwd: Path) -> tuple[float, dict]:
    """Wall seconds of ``cmd`` and its last stdout line as JSON, with ``cpu_user``: the user CPU
    seconds it (and its children) took. A leading ``PYTHONPATH=DIR`` item runs it with that path."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if cmd[0].startswith("PYTHONPATH="):
        env["PYTHONPATH"], cmd = cmd[0].removeprefix("PYTHONPATH="), cmd[1:]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_user"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    return seconds, result


def kfold_sides(args, work: Path) -> dict[str, list[str]]:
    script = work / "plain_kfold.py"
    script.write_text(PLAIN)
    dlrun = [sys.executable, "-m", "dlrun", "kfold", str(ROOT / "recipes" / "boston_housing.yaml"), "--k", "4",
             "--set", f"fit.epochs={args.epochs}", "--set", f"fit.batch_size={args.batch_size}", "--json", "--quiet"]
    sides = {"plain keras": [sys.executable, str(script), str(args.epochs), str(args.batch_size), "4", "42"],
             "dlrun kfold": dlrun}
    if args.before:  # the same command, dlrun from another checkout (the code before a change)
        sides[f"dlrun kfold ({args.before.name})"] = [f"PYTHONPATH={args.before.resolve()}", *dlrun]
    if args.every_epoch:  # the checkpoint policy before fit.checkpoint_every: a save after every epoch
        sides["dlrun kfold, a save every epoch"] = [*dlrun, "--set", "fit.checkpoint_every=0"]
    if args.workers:
        split = work / "plain_split.py"
        split.write_text(PLAIN_SPLIT)
        sides[f"plain keras, {args.workers} processes"] = [sys.executable, str(split), str(script), str(args.workers),
                                                           *sides["plain keras"][2:]]
        sides[f"dlrun kfold --workers {args.workers}"] = [*dlrun, "--workers", str(args.workers)]
    return sides


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: give {low} or more")
        return value
    parse.__name__ = "int"  # argparse says "invalid int value" for text
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=_at_least(1), default=2)
    parser.add_argument("--epochs", type=_at_least(1), default=80)
    parser.add_argument("--batch-size", type=_at_least(1), default=16)
    parser.add_argument("--workers", type=_at_least(0), default=2, help="0: no side with worker processes")
    parser.add_argument("--before", type=Path, help="also dlrun run from this checkout (e.g. one of main)")
    parser.add_argument("--every-epoch", action="store_true",
                        help="also dlrun with fit.checkpoint_every=0 (a checkpoint after every epoch, as before)")
    parser.add_argument("--tune-trials", type=_at_least(0), default=6, help="trials per tune call (0: skip tuning)")
    parser.add_argument("--tune-space", choices=("even", "recipe"), default="even",
                        help="even: the recipe's search without its epochs dimension and pruning (every trial "
                             "the same work); recipe: the search as it is")
    parser.add_argument("--skip-kfold", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    report: dict = {"nproc": os.cpu_count(), "load_before": os.getloadavg()}

    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_kfold:
            report["kfold"] = kfold_benchmark(args, work)
        if args.tune_trials:
            report["tune"] = tune_sides(args, work)
    report["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def kfold_benchmark(args, work: Path) -> dict:
    sides, results = kfold_sides(args, work), {}

    def measure(name):
        root = Path(tempfile.mkdtemp(dir=work))  # a fresh output root each run
        cmd = sides[name] + (["-o", str(root)] if name.startswith("dlrun") else [])
        seconds, result = _run(cmd, root)
        results.setdefault(name, []).append(result)
        return seconds

    times = measure_in_turns({name: name for name in sides}, measure, args.rounds)
    maes = {name: [r["metrics"]["cv_val_mae_mean"] if "metrics" in r else statistics.mean(r["fold_val_mae"])
                   for r in rs] for name, rs in results.items()}
    folds = results["plain keras"][0]["fold_val_mae"]
    spread = statistics.pstdev(folds)
    base = statistics.median(times["plain keras"])
    cpu = {name: [r["cpu_user"] for r in rs] for name, rs in results.items()}
    print(f"Boston K-fold: 4 folds, {args.epochs} epochs, batch {args.batch_size}; {args.rounds} rounds, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; wall time of each command, fresh output root each")
    for name in sides:
        median = statistics.median(times[name])
        paired = [t / p for t, p in zip(times[name], times["plain keras"])]  # the same round, back to back
        print(f"  {name:32s} {median:6.1f} s  ratio {median / base:.2f} (per round {', '.join(f'{r:.2f}' for r in paired)})"
              f"  CPU {statistics.median(cpu[name]):5.1f} s  mean val MAE {statistics.mean(maes[name]):.3f}"
              f"  [{', '.join(f'{t:.1f}' for t in times[name])} s]")
    mean_plain = statistics.mean(maes["plain keras"])
    print(f"  plain script's folds: val MAE {', '.join(f'{m:.3f}' for m in folds)} (std {spread:.3f}, "
          f"range {min(folds):.3f}–{max(folds):.3f})")

    def verdict(name: str, goal: float) -> None:
        ratio = statistics.median(times[name]) / base
        within = abs(statistics.mean(maes[name]) - mean_plain) <= spread
        print(f"  goal: {name} ≤ {goal}× plain: {ratio:.2f}× ({'met' if ratio <= goal else 'not met'}); mean val "
              f"MAE within the plain folds' spread (±{spread:.3f} of {mean_plain:.3f}): {'yes' if within else 'no'}")

    verdict("dlrun kfold", 1.05)
    if args.workers:
        verdict(f"dlrun kfold --workers {args.workers}", 0.7)
        ceiling = statistics.median(times[f"plain keras, {args.workers} processes"])
        print(f"  the plain script's folds over {args.workers} processes take {ceiling / base:.2f}× its time here: "
              f"dlrun kfold --workers {args.workers} takes "
              f"{statistics.median(times[f'dlrun kfold --workers {args.workers}']) / ceiling:.2f}× that")
    return {"times": times, "cpu_user": cpu, "val_mae": maes, "plain_fold_val_mae": folds}


# The recipe's space without its epochs dimension, pruning off: every trial costs the same, so a
# handful of trials measure the executor, not which epochs the sampler happened to draw.
EVEN_TRIALS = ["--set", "search.pruning.enabled=false", "--set",
               'search.space={"model.layers[0].Dense.units": {choice: [16, 32, 64, 128]}, '
               '"model.layers[1].Dropout.rate": {float: [0.0, 0.5], step: 0.1}, '
               '"compile.optimizer.rmsprop.learning_rate": {log_uniform: [1.0e-4, 1.0e-2]}}']


def tune_sides(args, work: Path) -> dict:
    tune = [sys.executable, "-m", "dlrun", "tune", str(ROOT / "recipes" / "boston_tuning.yaml"), "--trials",
            str(args.tune_trials), "--json", "--quiet", *(EVEN_TRIALS if args.tune_space == "even" else [])]
    sides = {"dlrun tune": tune, f"dlrun tune --workers {args.workers}": [*tune, "--workers", str(args.workers)]}
    runs: dict[str, list] = {}

    def measure(name):
        root = Path(tempfile.mkdtemp(dir=work))
        seconds, result = _run([*sides[name], "-o", str(root)], root)
        runs.setdefault(name, []).append(result["trials_run"] / seconds * 60)
        return seconds

    times = measure_in_turns({name: name for name in sides}, measure, args.rounds)
    print(f"Boston tuning: {args.tune_trials} trials of recipes/boston_tuning.yaml per call (3-fold each; "
          f"{'every trial 40 epochs, no pruning' if args.tune_space == 'even' else 'its own space'}), wall time "
          f"of each command")
    base = statistics.median(runs["dlrun tune"])
    for name in sides:
        rate = statistics.median(runs[name])
        print(f"  {name:28s} {rate:5.2f} trials/min  ratio {rate / base:.2f}  "
              f"[{', '.join(f'{t:.1f}' for t in times[name])} s]")
    speedup = statistics.median(runs[f"dlrun tune --workers {args.workers}"]) / base
    verdict = "met" if speedup >= 1.6 else "not met"
    print(f"  goal: ≥ 1.6× the trials per minute of serial: {speedup:.2f}× ({verdict})")
    return {"times": times, "trials_per_minute": runs}


if __name__ == "__main__":
    main()
