"""Runner overhead: one recipe through dlrun vs. the same model as a plain Keras script.

Both sides run in this one process (one TensorFlow import) on identical data (dlrun's own loading,
splits and fitted transforms), seeded alike. Pair 0 is a warm-up, reported apart; measured pairs
alternate which side goes first. Usage and results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse, atexit, functools, gc, inspect, json, os, platform, shutil, statistics, subprocess, sys, tempfile
import threading, time
from contextlib import contextmanager
from pathlib import Path

from dlrun.report import Reporter

EPOCH_HOOK = "per-epoch hook (history.csv + MLflow queue)"
WRITER = "mlflow: epoch writes (background thread)"  # overlaps training: not a fixed cost
SHARED = ("data", "evaluate", "model.save (.keras)")  # work both sides do; every other dlrun phase is its own


class Phases:
    """Named wall-clock totals. Only the outermost timed call of a thread counts, so nested
    timed calls (write_status → write_json, log_keras_model → Model.save) count once."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.missing: list[str] = []  # dlrun internals renamed since this was written: not timed
        self._local = threading.local()

    @contextmanager
    def section(self, label):
        if getattr(self._local, "busy", False):
            yield
            return
        self._local.busy, start = True, time.perf_counter()
        try:
            yield
        finally:
            self._local.busy = False
            self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - start

    def wrap(self, owner, attr, label):
        """Put a timer around ``owner.attr`` (a function, method or classmethod), in this process only."""
        try:
            raw = inspect.getattr_static(owner, attr)
        except AttributeError:
            return self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
        fn = raw.__func__ if isinstance(raw, classmethod) else raw

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.section(label):
                return fn(*args, **kwargs)

        setattr(owner, attr, classmethod(timed) if isinstance(raw, classmethod) else timed)


PH = Phases()


def instrument():
    """Timers on dlrun's phases. dlrun imports these inside its functions, at call time, so
    patching the defining module is seen (job.py's top-level imports are patched in job)."""
    import keras
    import dlrun.data.sources as src, dlrun.data.splits as splits, dlrun.data.transforms as tr
    import dlrun.model.builder as builder, dlrun.track.plots as plots, dlrun.track.rundir as rundir, dlrun.training.job as job
    from dlrun.track.mlflow_store import Tracker, TrackedRun
    RunDir = rundir.RunDir

    files, store = "run dir: files", "mlflow: start run + params"
    for owner, attr, label in [
        (src, "load_dataset", "data"), (splits, "apply_test_split", "data"), (job, "fit_pipeline", "data"),
        (tr.FittedPipeline, "apply", "data"), (job, "_evaluate", "evaluate"), (keras.Model, "save", SHARED[2]),
        (Tracker, "from_output_root", "mlflow: open store + experiment"),
        (Tracker, "start_run", store), (TrackedRun, "log_params", store),
        *[(RunDir, m, files) for m in ("create", "write_text", "write_json", "write_yaml", "write_status")],
        (rundir, "environment_info", files),
        (RunDir, "append_history", EPOCH_HOOK), (TrackedRun, "log_epoch", EPOCH_HOOK), (TrackedRun, "_drain", WRITER),
        (job, "preflight", "preflight (fit transforms, throwaway model)"),
        (builder, "check_data_fits", "check_data_fits (test_on_batch)"),
        (plots, "plot_history", "plot learning curves (PNG)"),
        (TrackedRun, "log_metrics", "mlflow: summary metrics"),
        (TrackedRun, "log_keras_model", "mlflow: log model (mlflow.keras)"),
        (TrackedRun, "log_artifact", "mlflow: run-dir artifacts"), (TrackedRun, "log_artifacts", "mlflow: run-dir artifacts"),
        (TrackedRun, "end", "mlflow: end run (flush + status)"),
    ]:
        PH.wrap(owner, attr, label)


def plain_model(recipe, input_shape):
    """The model as written with Keras alone (the quickstart: Sequential([Input((784,)), Dense(512, "relu"),
    Dense(10, "softmax")]), compile("rmsprop", ...)), or None when compile objects take arguments."""
    import keras

    c = recipe.compile
    if recipe.model.input_shape is not None or c.optimizer.args or c.loss.args or any(m.args for m in c.metrics):
        return None
    model = keras.Sequential([keras.Input(shape=input_shape)]
                             + [getattr(keras.layers, layer.name)(**layer.args) for layer in recipe.model.layers])
    model.compile(optimizer=c.optimizer.name, loss=c.loss.name, metrics=[m.name for m in c.metrics])
    return model


def run_baseline(loaded, out_dir: Path) -> dict:
    """The plain script: data → Sequential → compile → fit → evaluate(test) → save."""
    import keras
    import numpy as np
    from dlrun.data.sources import load_dataset
    from dlrun.data.splits import apply_test_split, holdout_split
    from dlrun.data.transforms import fit_pipeline
    from dlrun.model.builder import build_model, compile_model

    r, seconds, marks, metrics = loaded.recipe, [], [], {}
    timer = keras.callbacks.LambdaCallback(  # on_epoch_begin → on_epoch_end, as dlrun's recorder
        on_epoch_begin=lambda e, logs: marks.append(time.perf_counter()),
        on_epoch_end=lambda e, logs: seconds.append(time.perf_counter() - marks[-1]))
    start = time.perf_counter()
    with PH.section("data"):  # what dlrun does: same rows, transforms fitted on the same training part
        ds = apply_test_split(load_dataset(r.data, loaded.base_dir, r.seed), r.data.split, r.seed)
        split = holdout_split(len(ds.y_train), r.data.split.validation, r.seed)
        pipe = fit_pipeline(r.preprocessing, ds.x_train[split.train], ds.y_train[split.train])
        x, y = pipe.apply(ds.x_train[split.train], ds.y_train[split.train])
        val = None if split.validation is None else pipe.apply(ds.x_train[split.validation], ds.y_train[split.validation])
        test = None if ds.x_test is None else pipe.apply(ds.x_test, ds.y_test)
    keras.utils.set_random_seed(r.seed)
    with PH.section("build + compile"):
        model = plain_model(r, x.shape[1:])
        kind = "dlrun.model.builder" if model is None else "plain keras.Sequential"
        if model is None:
            model = build_model(r.model, x.shape[1:], name=r.name,
                                input_dtype="int32" if np.issubdtype(x.dtype, np.integer) else "float32")
            compile_model(model, r.compile)
    with PH.section("fit"):
        model.fit(x, y, batch_size=r.fit.batch_size, epochs=r.fit.epochs, shuffle=r.fit.shuffle,
                  validation_data=val, callbacks=[timer], verbose=0)
    with PH.section("evaluate"):
        if test is not None:
            res = model.evaluate(*test, batch_size=r.fit.batch_size, verbose=0, return_dict=True)
            metrics = {f"test_{k}": float(v) for k, v in res.items()}
    out_dir.mkdir(parents=True)
    with PH.section("model.save (.keras)"):
        model.save(out_dir / "model.keras")
    return {"wall": time.perf_counter() - start, "epochs": seconds, "metrics": metrics, "model": kind}


def run_dlrun(loaded, output_root: Path) -> dict:
    from dlrun.training.runner import run_recipe

    class EpochLog(Reporter):  # silent; keeps the seconds dlrun measures per epoch (on_epoch_begin→end)
        def __init__(self):
            self.seconds: list[float] = []

        def epoch(self, job, epoch, epochs, logs, seconds):
            self.seconds.append(seconds)

    reporter, start = EpochLog(), time.perf_counter()
    summary = run_recipe(loaded, output_root=output_root, reporter=reporter, command=["runner_overhead"])
    wall = time.perf_counter() - start
    # dlrun's epoch seconds stop before its own on_epoch work: add that work back, spread evenly.
    hook = PH.totals.get(EPOCH_HOOK, 0.0) / max(1, len(reporter.seconds))
    return {"wall": wall, "epochs": [s + hook for s in reporter.seconds], "epochs_fit_only": reporter.seconds,
            "metrics": {k: v for k, v in summary.metrics.items() if k.startswith("test_")}}


def cold_process_costs(root: Path, experiment: str) -> dict:
    """Paid once per `dlrun train` process, hidden in this loop: import mlflow, open the existing store."""
    code = ("import time; t0 = time.perf_counter(); import mlflow; t1 = time.perf_counter()\n"
            "from dlrun.track.mlflow_store import Tracker; Tracker.from_output_root(%r, %r)\n"
            "print(t1 - t0, time.perf_counter() - t1)" % (str(root), experiment))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:]}
    out = done.stdout.split()
    return {"import mlflow": float(out[-2]), "open existing store + experiment": float(out[-1])}


def environment() -> dict:
    import keras, mlflow, tensorflow as tf
    from threadpoolctl import threadpool_info

    from tensorflow.python.util import _pywrap_util_port  # TF's own "is oneDNN on" check

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "nproc": len(os.sched_getaffinity(0)), "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpu": next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?"),
        "cpu_flags": ",".join(f for f in ("avx2", "avx512f", "avx512_vnni", "fma") if f" {f}" in cpuinfo),
        "python": platform.python_version(), "tf": tf.__version__, "keras": keras.__version__, "mlflow": mlflow.__version__,
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "0(=cores)",
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "0(auto)",
        "onednn": bool(_pywrap_util_port.IsMklEnabled()),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": ";".join(sorted({f"{p['internal_api']}:{p.get('architecture', '-')}x{p['num_threads']}" for p in threadpool_info()})),
    }


def steady(epochs: list[float]) -> list[float]:
    """Epoch times without epoch 1, which includes tf.function tracing."""
    return epochs[1:] or epochs


def summarize(runs: list[dict]) -> dict:
    measured = [r for r in runs if r["pair"] > 0] or runs
    med = statistics.median
    out: dict = {}
    for side in ("baseline", "dlrun"):
        rs = [r for r in measured if r["side"] == side]
        out[side] = {"epoch1": med(r["epochs"][0] for r in rs), "epoch": med(e for r in rs for e in steady(r["epochs"])),
                     "wall": med(r["wall"] for r in rs),
                     "phases": {k: med(r["phases"].get(k, 0.0) for r in rs) for k in sorted({k for r in rs for k in r["phases"]})}}
    # Ratios within each pair (both sides ran back to back) are less exposed to load drift.
    pairs = [{r["side"]: r for r in measured if r["pair"] == i} for i in sorted({r["pair"] for r in measured})]
    for key, f in (("epoch", lambda r: med(steady(r["epochs"]))), ("wall", lambda r: r["wall"])):
        out[f"{key}_ratio"] = out["dlrun"][key] / out["baseline"][key]
        out[f"{key}_pair_ratios"] = [f(p["dlrun"]) / f(p["baseline"]) for p in pairs]
        out[f"{key}_pair_ratio_median"] = med(out[f"{key}_pair_ratios"])
    out["dlrun_fit_only_epoch"] = med(e for r in measured if r["side"] == "dlrun" for e in steady(r["epochs_fit_only"]))
    out["dlrun_only_fixed"] = {k: v for k, v in out["dlrun"]["phases"].items() if k not in (*SHARED, EPOCH_HOOK, WRITER)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="?", default="recipes/quickstart.yaml", help="default: recipes/quickstart.yaml")
    p.add_argument("--epochs", type=int, help="same as --set fit.epochs=N")
    p.add_argument("--repeats", type=int, default=3, help="measured pairs after the warm-up pair (default 3)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as with `dlrun train --set` (repeatable)")
    p.add_argument("--output-root", type=Path, help="where both sides write (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = p.parse_args()

    from dlrun.recipe.loading import load_recipe
    from dlrun.tf_runtime import configure_runtime
    overrides = args.overrides + ([f"fit.epochs={args.epochs}"] if args.epochs else [])
    loaded = load_recipe(args.recipe, overrides)
    r = loaded.recipe
    if r.evaluation.protocol != "holdout" or r.fit.callbacks:
        raise SystemExit("runner_overhead: needs a hold-out recipe without fit.callbacks (try --set fit.callbacks=[])")
    root = (args.output_root or Path(tempfile.mkdtemp(prefix="dlrun-bench-"))).resolve()
    if args.output_root is None:
        atexit.register(shutil.rmtree, root, True)  # also when a run fails
    configure_runtime(r.seed)  # import TF quietly and quiet MLflow's notes, as the CLI does
    import keras, tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # "retracing" notes: this loop builds a new model per run on purpose
    instrument()
    env = environment()

    runs = []
    for pair in range(args.repeats + 1):
        for side in ("baseline", "dlrun") if pair % 2 == 0 else ("dlrun", "baseline"):
            keras.backend.clear_session()  # outside the timers, for both sides
            gc.collect()
            PH.totals = {}
            rec = run_baseline(loaded, root / "baseline" / f"pair{pair}") if side == "baseline" else run_dlrun(loaded, root)
            runs.append({**rec, "side": side, "pair": pair, "phases": dict(PH.totals)})
            print(f"pair {pair} {side:8s} wall {runs[-1]['wall']:6.2f}s  epochs "
                  + " ".join(f"{s:.3f}" for s in runs[-1]["epochs"]), flush=True)
    s, cold = summarize(runs), cold_process_costs(root, r.tracking.experiment or r.name)
    env["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    b, d = s["baseline"], s["dlrun"]

    print(f"\n{r.name} {' '.join(overrides)}: {r.fit.epochs} epochs, batch {r.fit.batch_size}, "
          f"{args.repeats} measured pairs; baseline model: {runs[0]['model']}")
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"\n{'median':26s}{'baseline':>9s}{'dlrun':>9s}{'ratio':>8s}{'overhead':>9s}   ratio per pair: median [each]")
    for label, key in (("epoch 1 (with tracing) s", "epoch1"), ("epoch 2..N s (pooled)", "epoch"), ("whole run s", "wall")):
        ratio = d[key] / b[key]
        pairs = f"{s[key + '_pair_ratio_median']:.3f} [" + " ".join(f"{x:.3f}" for x in s[key + "_pair_ratios"]) + "]" \
            if key != "epoch1" else ""
        print(f"{label:26s}{b[key]:9.3f}{d[key]:9.3f}{ratio:8.3f}{(ratio - 1) * 100:+8.1f}%   {pairs}")
    print(f"  dlrun epoch 2..N without its per-epoch hook: {s['dlrun_fit_only_epoch']:.3f}s; "
          f"hook per epoch: {d['phases'].get(EPOCH_HOOK, 0) / r.fit.epochs * 1000:.2f} ms")
    print(f"\n{'phases, median s':44s}{'baseline':>9s}{'dlrun':>9s}")
    for k in sorted(set(b["phases"]) | set(d["phases"]), key=lambda k: (k not in SHARED, k)):
        print(f"  {k:42s}" + "".join(f"{'' if v is None else f'{v:.3f}':>9s}" for v in (b["phases"].get(k), d["phases"].get(k))))
    fixed = sum(s["dlrun_only_fixed"].values())
    print(f"  dlrun-only fixed costs per run: {fixed:.3f}s; whole-run difference: {d['wall'] - b['wall']:+.3f}s")
    warm = {x["side"]: x for x in runs if x["pair"] == 0}
    print(f"warm-up pair (first MLflow import, store creation, tracing): baseline {warm['baseline']['wall']:.2f}s, "
          f"dlrun {warm['dlrun']['wall']:.2f}s (store open {warm['dlrun']['phases'].get('mlflow: open store + experiment', 0):.2f}s)")
    if PH.missing:
        print("not timed (renamed in dlrun?): " + ", ".join(PH.missing))
    print("per CLI process, hidden here (fresh interpreter): " + ", ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in cold.items()))
    for x in runs[-2:]:
        print(f"final metrics, last pair, {x['side']:8s}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(x["metrics"].items())))
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "overrides": overrides, "repeats": args.repeats,
                                         "environment": env, "cold_process": cold, "summary": s, "runs": runs},
                                        indent=2, default=str))


if __name__ == "__main__":
    from dlrun.errors import DlrunError

    try:
        main()
    except DlrunError as exc:  # a recipe or data problem: dlrun's own message, no traceback
        raise SystemExit(f"runner_overhead: {exc}")
