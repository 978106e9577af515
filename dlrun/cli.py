"""The ``dlrun`` command line: parses, calls the library, maps errors to exit codes.

Startup stays light: tensorflow, keras and mlflow are imported only by the commands
that train or build a model, never by ``--help``, ``validate`` or ``show --no-model``.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from dlrun.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, DlrunError, RecipeError, UsageError
from dlrun.json_output import claim_stdout, print_json

app = typer.Typer(
    name="dlrun",
    help="Run deep-learning experiments declared as YAML recipes (Keras 3 on TensorFlow, tracked in MLflow).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    epilog=(
        "Examples:  [cyan]dlrun train recipes/quickstart.yaml[/] · "
        "[cyan]dlrun kfold recipes/boston_housing.yaml --k 4[/] · "
        "[cyan]dlrun validate recipes/*.yaml[/] · [cyan]dlrun show recipes/reuters_dense.yaml[/]"
    ),
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_TERMINATED = 143

SetOption = typer.Option(
    None, "--set", "-s", metavar="KEY=VALUE",
    help="Override a recipe value, e.g. [cyan]--set fit.epochs=4[/]; VALUE is read as YAML. Repeatable.",
)
OutputOption = typer.Option(
    Path("artifacts"), "--output-root", "-o", envvar="DLRUN_OUTPUT_ROOT",
    help="Where run directories and the embedded MLflow store go.",
)
TrackingOption = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under the output root)."
)
SeedOption = typer.Option(None, "--seed", help="Random seed (overrides the recipe's 'seed').")
JsonOption = typer.Option(False, "--json", help="Print one JSON summary on stdout (progress goes to stderr).")
QuietOption = typer.Option(False, "--quiet", "-q", help="Print nothing but errors and warnings (and --json).")
DebugOption = typer.Option(False, "--debug", help="Show Python tracebacks on errors.")
RegisterOption = typer.Option(None, "--register", metavar="NAME",
                              help="Register the run's logged MLflow model as a new version of NAME.")
AllowReadOption = typer.Option(
    None, "--allow-read", metavar="PATH",
    help="Let the recipe read files under PATH too (by default only under its own folder). Repeatable.",
)
AllowNetworkOption = typer.Option(False, "--allow-network", help="Let the recipe's callbacks reach the network "
                                                                  "(RemoteMonitor).")
ExecutorOption = typer.Option(
    "serial", "--executor", help="Where the jobs (K-fold's folds, tune's trials) run: serial (here, one by one), "
                                 "local (worker processes on this host), ray, slurm.")
WorkersOption = typer.Option(None, "--workers", min=1, help="Jobs at once; alone, N > 1 means --executor local.")
GpusOption = typer.Option(None, "--gpus", metavar="0,1,…", help="The GPUs to use (nvidia-smi ids): a serial run "
                                                              "trains on them (several: MirroredStrategy); local "
                                                              "deals them out to workers (default: every visible one).")
GpusPerJobOption = typer.Option(None, "--gpus-per-job", min=0, help="GPUs each job gets (default 1 where there are "
                                                                    "GPUs; 0: train on the CPU).")
RayAddressOption = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS", help="ray: the cluster to use "
                                                                                 "(default: a local Ray for the run).")
ExecutorProfileOption = typer.Option(None, "--executor-profile", metavar="YAML",
                                     help="The executor's settings (configs/executors/slurm.yaml: partition, time, "
                                          "GPUs, array parallelism); flags override them.")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def _user_errors(debug: bool, json_out: bool = False) -> Iterator[None]:
    """Map every failure to one clear message and an exit code; tracebacks only with --debug.
    With --json, stdout still gets one JSON object saying what happened."""
    from dlrun.training.runner import RunInterrupted

    try:
        yield
        return
    except typer.Exit:
        raise
    except BaseException as caught:  # noqa: BLE001 - the last line of defence for users
        exc = caught
    if isinstance(exc, RecipeError):
        n = len(exc.issues)
        code, status = EXIT_USAGE, "INVALID"
        text = f"{exc}\n{n} problem{'s' if n != 1 else ''} in the recipe; nothing was run."
    elif isinstance(exc, DlrunError):
        code, status, text = exc.exit_code, "FAILED", f"error: {exc}"
    elif isinstance(exc, (RunInterrupted, KeyboardInterrupt)):
        code = EXIT_TERMINATED if getattr(exc, "signal_name", "") == "SIGTERM" else EXIT_INTERRUPTED
        status = exc.summary.status if isinstance(exc, RunInterrupted) else "KILLED"
        text = f"dlrun: {exc}" if isinstance(exc, RunInterrupted) else f"dlrun: {_interrupted_outside_a_run(exc)}"
    elif isinstance(exc, Exception):
        code, status = EXIT_RUNTIME, "FAILED"
        text = f"error: {type(exc).__name__}: {exc}" + ("" if debug else "\n(run again with --debug for the traceback)")
    else:  # SystemExit and the like: not ours to translate
        raise exc
    if getattr(exc, "late_signals", None):  # a signal came while the failed run was being recorded
        text += f"\ndlrun: then {', then '.join(exc.late_signals)} while the run was being recorded" + (
            "" if exc.uploaded else f"; the upload of its files to MLflow was cut short: dlrun sync "
                                    f"{exc.run_summary.run_dir} uploads the rest")
    if debug:
        traceback.print_exception(exc)
    _err(text)
    if json_out:
        run = getattr(exc, "summary", None) or getattr(exc, "run_summary", None)
        record = {**(run.to_dict() if run else {}), "status": status, "error": text, "exit_code": code}
        print_json(record)
    raise typer.Exit(code)


def _interrupted_outside_a_run(exc: BaseException) -> str:
    """A signal that came before a run was created, or after it was recorded."""
    from dlrun.training.interrupts import last_run

    signals = ", then ".join(getattr(exc, "signals", ["SIGINT"]))
    ended = last_run()
    if ended is None:
        return f"interrupted ({signals}) before the run started: no run was created or changed"
    return f"interrupted ({signals}) after the run was recorded: {ended}"


def _load(recipe: Path, overrides: list[str]):
    from dlrun.recipe.loading import load_recipe

    return load_recipe(recipe, overrides)


def _executor_options(executor: str, workers, gpus, gpus_per_job, ray_address, profile):
    from dlrun.execution.options import ExecutorOptions

    return ExecutorOptions(executor, workers, gpus, gpus_per_job, ray_address, profile)


def _run(recipe: Optional[Path], overrides: list[str], output_root: Path, tracking_uri, json_out: bool, quiet: bool,
         debug: bool, resume: Optional[str] = None, force: bool = False, register: Optional[str] = None,
         allow_read=None, allow_network=False, executor_options=None):
    from dlrun.recipe.permissions import granted
    from dlrun.training.interrupts import install

    install()  # Ctrl-C and SIGTERM: stop training at a safe point, mark the run KILLED
    with _user_errors(debug, json_out), granted(network=allow_network, read=allow_read or ()):
        from dlrun.training.resume import load_for_run

        loaded, target = load_for_run(recipe, overrides, output_root, resume, force)
        if register:
            _check_register(loaded.recipe)
        from dlrun.execution.options import executor_for
        from dlrun.report import make_reporter
        from dlrun.training.runner import run_recipe

        with executor_for(executor_options, output_root=output_root, tracking_uri=tracking_uri,
                          resume=target) as executor:
            reporter = make_reporter(quiet=quiet, json_mode=json_out)
            summary = run_recipe(
                loaded, output_root=output_root, tracking_uri=tracking_uri, reporter=reporter,
                command=["dlrun", *sys.argv[1:]], resume=target, executor=executor,
            )
        registered = _register(summary, register, quiet or json_out) if register else None
        if json_out:
            print_json({**summary.to_dict(), **({"registered": registered} if register else {})})


def _check_register(recipe) -> None:
    """--register needs a logged model that stands for the run: said before training, not after."""
    from dlrun.errors import UsageError

    if not recipe.tracking.log_model:
        raise UsageError("--register: the recipe has tracking.log_model: false, so no model is logged to register")
    if recipe.evaluation.protocol == "kfold" and not recipe.evaluation.refit:
        raise UsageError("--register: a K-fold run without --refit has fold models only; add --refit (the refit's "
                         "model is registered), or dlrun export --fold N --register NAME later")
    if recipe.evaluation.protocol == "baseline":
        raise UsageError("--register: a baseline run has no model to register")


def _register(summary, name: str, quiet: bool) -> dict:
    from dlrun.inference.serving_mlflow import describe_registered, register_run_model

    try:
        registered = register_run_model(summary.run_id, summary.tracking_uri, name)
    except Exception as exc:
        exc.run_summary = summary  # the run itself finished: --json still names it
        raise
    if not quiet:
        print(describe_registered(registered), flush=True)
    return registered


def _seed_override(seed: Optional[int]) -> list[str]:
    return [f"seed={seed}"] if seed is not None else []


@app.command()
def train(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML file (with --resume: default, the run's own)."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN",
                                         help="Continue an interrupted run (its directory or MLflow run id) from "
                                              "its last checkpoint, in the same MLflow run."),
    force: bool = typer.Option(False, "--force", help="With --resume: continue even if the recipe changed."),
    set_: Optional[List[str]] = SetOption,
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    seed: Optional[int] = SeedOption,
    register: Optional[str] = RegisterOption,
    executor: str = ExecutorOption,
    workers: Optional[int] = WorkersOption,
    gpus: Optional[str] = GpusOption,
    gpus_per_job: Optional[int] = GpusPerJobOption,
    ray_address: Optional[str] = RayAddressOption,
    executor_profile: Optional[Path] = ExecutorProfileOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
    allow_read: Optional[List[Path]] = AllowReadOption,
    allow_network: bool = AllowNetworkOption,
) -> None:
    """Train a recipe under its evaluation protocol (hold-out unless the recipe says otherwise)."""
    _run(recipe, [*(set_ or []), *_seed_override(seed)], output_root, tracking_uri, json_out, quiet, debug,
         resume, force, register, allow_read, allow_network,
         _executor_options(executor, workers, gpus, gpus_per_job, ray_address, executor_profile))


@app.command()
def kfold(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    k: Optional[int] = typer.Option(None, "--k", "-k", min=2, help="Number of folds (default: the recipe's, else 5)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Iterated K-fold: repeat with reshuffling."),
    refit: Optional[bool] = typer.Option(None, "--refit/--no-refit", help="Train a final model for the best epoch and test it."),
    set_: Optional[List[str]] = SetOption,
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    seed: Optional[int] = SeedOption,
    register: Optional[str] = RegisterOption,
    executor: str = ExecutorOption,
    workers: Optional[int] = WorkersOption,
    gpus: Optional[str] = GpusOption,
    gpus_per_job: Optional[int] = GpusPerJobOption,
    ray_address: Optional[str] = RayAddressOption,
    executor_profile: Optional[Path] = ExecutorProfileOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
    allow_read: Optional[List[Path]] = AllowReadOption,
    allow_network: bool = AllowNetworkOption,
) -> None:
    """Evaluate any recipe with K-fold cross-validation (one nested MLflow run per fold)."""
    from dlrun.api import kfold_overrides

    overrides = kfold_overrides(set_ or [], k=k, repeats=repeats, refit=refit)
    _run(recipe, [*overrides, *_seed_override(seed)], output_root, tracking_uri, json_out, quiet, debug,
         register=register, allow_read=allow_read, allow_network=allow_network,
         executor_options=_executor_options(executor, workers, gpus, gpus_per_job, ray_address, executor_profile))


@app.command()
def tune(
    recipe: Path = typer.Argument(..., help="Recipe YAML file with a 'search:' section."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials in the study in all (default: the "
                                                                      "recipe's budget); a re-run resumes up to it."),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.01, help="Stop starting trials after this."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where the best recipe goes (default: "
                                                                "<output-root>/tuning/<recipe>-best.yaml)."),
    set_: Optional[List[str]] = SetOption,
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    seed: Optional[int] = SeedOption,
    executor: str = ExecutorOption,
    workers: Optional[int] = WorkersOption,
    gpus: Optional[str] = GpusOption,
    gpus_per_job: Optional[int] = GpusPerJobOption,
    ray_address: Optional[str] = RayAddressOption,
    executor_profile: Optional[Path] = ExecutorProfileOption,
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL",
                                          help="The study's Optuna storage (default: SQLite under the output root; "
                                               "across hosts an RDB URL, e.g. postgresql://host/optuna)."),
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
    allow_read: Optional[List[Path]] = AllowReadOption,
    allow_network: bool = AllowNetworkOption,
) -> None:
    """Search hyperparameters (Optuna): one nested MLflow run per trial; writes the best trial's recipe."""
    from dlrun.recipe.permissions import granted
    from dlrun.training.interrupts import install

    install()
    with _user_errors(debug, json_out), granted(network=allow_network, read=allow_read or ()):
        loaded = _load(recipe, [*(set_ or []), *_seed_override(seed)])
        from dlrun.execution.options import executor_for
        from dlrun.report import make_reporter
        from dlrun.tuning.best import print_trials
        from dlrun.tuning.tune import tune as run_tune

        options = _executor_options(executor, workers, gpus, gpus_per_job, ray_address, executor_profile)
        with executor_for(options, output_root=output_root, tracking_uri=tracking_uri, tuning=True,
                          storage=storage) as pool:
            reporter = make_reporter(quiet=quiet, json_mode=json_out)
            try:
                result = run_tune(loaded, output_root=output_root, tracking_uri=tracking_uri, reporter=reporter,
                                  trials=trials, minutes=minutes, output=output, executor=pool, storage=storage)
            finally:
                reporter.close()
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            print_trials(result, tty=sys.stdout.isatty())


@app.command()
def validate(
    recipes: List[Path] = typer.Argument(..., help="Recipe YAML files."),
    set_: Optional[List[str]] = SetOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
    allow_read: Optional[List[Path]] = AllowReadOption,
    allow_network: bool = AllowNetworkOption,
) -> None:
    """Check recipes without running them (structure, types, Keras names and arguments, files)."""
    from dlrun.recipe.loading import load_recipe
    from dlrun.recipe.permissions import granted

    failed, warnings = 0, {}  # each warning once, with the recipes it was found in
    for path in recipes:
        try:
            with granted(network=allow_network, read=allow_read or ()):
                loaded = load_recipe(path, set_ or [], require_data=False)
        except RecipeError as exc:
            failed += 1
            if debug:
                traceback.print_exc()
            _err(str(exc))
            continue
        for warning in loaded.warnings:
            warnings.setdefault(warning, []).append(path)
        if not quiet:
            print(f"ok: {path}")
        _show_plugins(path, loaded.recipe.plugins, quiet)
    for warning, found_in in warnings.items():
        _err(f"warning: {warning}{_validated_in(warning, found_in)}")
    if failed:
        _err(f"{failed} of {len(recipes)} recipe{'s' if len(recipes) != 1 else ''} invalid.")
        raise typer.Exit(EXIT_USAGE)


def _validated_in(warning, recipes: list[Path]) -> str:
    """`` (in a.yaml, b.yaml)``: the recipes validated that a warning located elsewhere (a file
    they extend, a --set) concerns; nothing when it is one recipe's own line."""
    if len(recipes) == 1 and Path(warning.location.file) == recipes[0].resolve():
        return ""
    listed = ", ".join(map(str, recipes[:5])) + (f" and {len(recipes) - 5} more" if len(recipes) > 5 else "")
    return f" (in {listed})"


def _show_plugins(path: Path, plugins: list[str], quiet: bool) -> None:
    """The code a recipe would import when it runs: found, never imported, here."""
    from dlrun.recipe.plugins import plugin_report

    for status in plugin_report(plugins):
        if not quiet:
            print(f"  imports: {status.name} ({status.origin or 'not importable here'})")
        if not status.found:
            _err(f"warning: {path}: plugins: '{status.name}' is not importable here — install it, or add the "
                 f"folder that holds it to PYTHONPATH (dlrun train imports it)")


@app.command()
def show(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    model: bool = typer.Option(True, "--model/--no-model", help="Also build the model and print its summary."),
    debug: bool = DebugOption,
    allow_read: Optional[List[Path]] = AllowReadOption,
) -> None:
    """Print the resolved recipe (defaults filled in, extends and --set applied) and the model summary."""
    from dlrun.recipe.permissions import granted

    # show builds the model but never fits it: no callback runs, so none reaches the network
    with _user_errors(debug), granted(network=True, read=allow_read or ()):
        loaded = _load(recipe, set_ or [])
        from dlrun.show import print_model_summary, print_resolved

        print_resolved(loaded)
        if model:
            print_model_summary(loaded)


@app.command()
def schema(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write the schema to this file (default: print it on stdout)."),
    debug: bool = DebugOption,
) -> None:
    """Write the JSON Schema of recipes, for editors that complete and check them as you type.

    A recipe names it in a comment at its top, [cyan]# yaml-language-server: $schema=../dlrun.schema.json[/]
    (VS Code's YAML extension and any editor with yaml-language-server read it)."""
    with _user_errors(debug):
        from dlrun.recipe.json_schema import schema_text

        text = schema_text()
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            _err(f"wrote {output} ({len(text.encode()) // 1024} KiB)")


@app.command()
def compare(
    runs: List[str] = typer.Argument(..., help="Run directories, MLflow run ids, recipe files or recipe names "
                                               "(a recipe means its latest FINISHED run)."),
    metric: str = typer.Option("val_loss", "--metric", "-m", help="The per-epoch metric to overlay."),
    smooth: Optional[float] = typer.Option(None, "--smooth", help="Smooth the plotted curves (EMA, the book uses 0.9)."),
    output: Optional[Path] = typer.Option(None, "--output", help="The PNG to write (default: <output-root>/compare/…)."),
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Overlay one metric's curve from several runs in a PNG and tabulate final and best values (book 4.4)."""
    with _user_errors(debug, json_out):
        from dlrun.compare import compare as compare_runs
        from dlrun.compare import print_table

        result = compare_runs(runs, metric=metric, smooth=smooth, output=output, output_root=output_root,
                              tracking_uri=tracking_uri)
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            print_table(result, tty=sys.stdout.isatty())
            print(f"plot: {result.plot}")


@app.command()
def sync(
    runs: List[Path] = typer.Argument(..., help="Run directories (<output-root>/runs/<experiment>/<run>)."),
    output_root: Optional[Path] = typer.Option(
        None, "--output-root", "-o", envvar="DLRUN_OUTPUT_ROOT",
        help="Output root of the embedded store (default: the one the run directory sits in).",
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: the one the run recorded, then "
                                     "$MLFLOW_TRACKING_URI, then SQLite under the output root).",
    ),
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Upload runs kept offline (tracking server away) to MLflow: params, the whole metric history,
    artifacts, folds, final status. Safe to repeat: nothing is logged twice."""
    with _user_errors(debug, json_out):
        from dlrun.track.sync import sync_run

        results, code = [], 0
        for path in runs:
            try:
                result = sync_run(path, tracking_uri=tracking_uri, output_root=output_root)
            except Exception as exc:  # noqa: BLE001 - report it, go on with the other runs
                known = isinstance(exc, DlrunError)
                run_code = exc.exit_code if known else EXIT_RUNTIME
                code = max(code, run_code)
                if debug:
                    traceback.print_exception(exc)
                text = f"error: {exc}" if known else f"error: {type(exc).__name__}: {exc}"
                _err(text + ("" if known or debug else "\n(run again with --debug for the traceback)"))
                results.append({"run_dir": str(path), "status": "FAILED", "error": text, "exit_code": run_code})
                continue
            for warning in result.warnings:
                _err(f"warning: {warning}")
            if not quiet and not json_out:
                print(result.line(), flush=True)
            results.append({**result.to_dict(), "status": "SYNCED", "run_status": result.status})
        if json_out:
            print_json({"status": "OK" if code == 0 else "FAILED", "runs": results, "exit_code": code})
    if code:
        raise typer.Exit(code)


@app.command()
def ensemble(
    runs: List[str] = typer.Argument(..., help="A K-fold run (its fold models are the members), or several runs "
                                               "of the same data (each one's final model): run directories, run "
                                               "ids, recipe files or names."),
    weights: Optional[str] = typer.Option(None, "--weights", metavar="W1,W2,…",
                                          help="One weight per member, in order (normalized)."),
    fit_weights: bool = typer.Option(False, "--fit-weights",
                                     help="Fit the weights on validation data (never on the test split)."),
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    track: bool = typer.Option(True, "--track/--no-track", help="Also record the ensemble as an MLflow run."),
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Average trained models' test predictions and score the ensemble next to each member (book 7.3.3)."""
    with _user_errors(debug, json_out):
        from dlrun.ensembling.core import ensemble as run_ensemble
        from dlrun.ensembling.table import print_table as print_ensemble

        result = run_ensemble(runs, weights=weights, fit_weights=fit_weights, output_root=output_root,
                              tracking_uri=tracking_uri, track=track)
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            print_ensemble(result, tty=sys.stdout.isatty())
            print(f"recorded: {result.ensemble_dir}")


FoldOption = typer.Option(None, "--fold", min=1, help="Use fold N's model of a K-fold run (default: its refit model).")


@app.command()
def predict(
    run: str = typer.Argument(..., help="The run: its directory, MLflow run id, recipe file or name (latest run)."),
    input_: str = typer.Argument(..., metavar="INPUT", help="New data in the form of the run's data: a CSV, an "
                                                            ".npz/.npy, a folder of images or texts, a .jsonl "
                                                            "file, or - for JSON lines on stdin."),
    output: str = typer.Option(..., "--output", "-o", help="Where predictions go: .csv, .jsonl, .npz, or - "
                                                           "(JSON lines on stdout)."),
    fold: Optional[int] = FoldOption,
    top_k: int = typer.Option(1, "--top-k", min=1, help="For classifiers: the K likeliest classes per row."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: the run's fit.batch_size."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    output_root: Path = typer.Option(Path("artifacts"), "--output-root", envvar="DLRUN_OUTPUT_ROOT",
                                     help="Where the runs are (run names and ids are looked up there)."),
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Predict new data with a trained run's model and the preprocessing it fitted (book 3.4.6)."""
    with _user_errors(debug, json_out):
        if json_out and output == "-":
            raise UsageError("--json and -o - both want stdout: write the predictions to a file with -o")
        from dlrun.inference.predict import predict as run_predict

        result = run_predict(run, input_, output, output_root=output_root, tracking_uri=tracking_uri, fold=fold,
                             top_k=top_k, batch_size=batch_size, force=force,
                             progress=sys.stderr.isatty() and not quiet and not json_out)
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet and output != "-":
            _err(f"predicted {result.rows} {'rows' if result.rows != 1 else 'row'} in {result.seconds:.1f} s → "
                 f"{result.output} (columns: {', '.join(result.columns)})")


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="The run: its directory, MLflow run id, recipe file or name (latest run)."),
    data: str = typer.Argument(..., help="Labelled data in the form of the run's data (a file or folder), or a "
                                         "data section inline: '{source: npz, path: more.npz}'."),
    fold: Optional[int] = FoldOption,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: the run's fit.batch_size."),
    track: bool = typer.Option(True, "--track/--no-track", help="Also record the evaluation as an MLflow run."),
    output_root: Path = OutputOption,
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Score a trained run's model on another labelled data set with its own loss and metrics."""
    with _user_errors(debug, json_out):
        from dlrun.inference.evaluate import evaluate as run_evaluate

        result = run_evaluate(run, data, output_root=output_root, tracking_uri=tracking_uri, fold=fold,
                              batch_size=batch_size, track=track)
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            width = max(map(len, result.metrics), default=0)
            print(f"{result.rows} rows of {result.data} on {result.model}:")
            for name, value in result.metrics.items():
                print(f"  {name:<{width}}  {value:.6g}")
            print(f"recorded: {result.evaluation_dir}")


@app.command()
def runs(
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Only runs of this recipe (name or file)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Only runs of this experiment."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs in this state: RUNNING, FINISHED, "
                                                                "FAILED, KILLED or STALE."),
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show the newest N (0: all)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Also read each run's status in its MLflow store."),
    mark_stale: bool = typer.Option(False, "--mark-stale", help="End stale runs (RUNNING, no live process) as "
                                                                "KILLED on disk and in MLflow; they stay resumable."),
    output_root: Path = OutputOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """List runs, newest first: recipe, protocol, status, start, duration, main metrics; says where the
    run directory and MLflow disagree, and which RUNNING runs no process holds any more (stale)."""
    with _user_errors(debug, json_out):
        from dlrun.runs_list import list_runs, print_listing

        listing = list_runs(output_root, recipe=recipe, experiment=experiment, status=status, limit=limit or None,
                            store=store, mark_stale=mark_stale)
        for error in listing.store_errors:
            _err(f"warning: cannot read the tracking store {error}")
        if json_out:
            print_json({"status": "OK", **listing.to_dict()})
        elif not quiet:
            print_listing(listing, tty=sys.stdout.isatty())
            for path in listing.marked:
                print(f"marked KILLED (stale): {path}")


@app.command()
def gc(
    keep: int = typer.Option(1, "--keep", min=0, help="In each experiment, leave the N newest runs and the N newest "
                                                      "finished runs whole."),
    older_than: Optional[str] = typer.Option(None, "--older-than", metavar="AGE",
                                             help="Only prune runs that ended more than AGE ago (12h, 7d, 2w)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="Only runs of this experiment."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed and its size; remove nothing."),
    output_root: Path = OutputOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Free disk: remove old runs' checkpoints and models (and their MLflow logged models), keeping their
    records (run.json, recipe, history, metrics, plots, the MLflow run). RUNNING runs are never touched."""
    with _user_errors(debug, json_out):
        from dlrun.track.gc import collect_garbage, parse_age

        age = parse_age(older_than) if older_than is not None else None
        result = collect_garbage(output_root, keep=keep, older_than=age, experiment=experiment, dry_run=dry_run)
        for warning in result.warnings:
            _err(f"dlrun: warning: {warning}")
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            print("\n".join(result.lines()))


@app.command()
def export(
    run: str = typer.Argument(..., help="A run directory, MLflow run id, recipe file or name (its latest FINISHED "
                                        "run)."),
    format_: str = typer.Option(..., "--format", "-f", metavar="keras|savedmodel|onnx|tflite",
                                help="keras (a .keras file), savedmodel (a folder), onnx (.onnx), tflite (.tflite)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where the export goes; PATH.dlrun.json goes beside it."),
    fold: Optional[int] = typer.Option(None, "--fold", min=1, help="A K-fold run's fold N (default: its refit)."),
    force: bool = typer.Option(False, "--force", help="Replace PATH if it exists."),
    register: Optional[str] = RegisterOption,
    output_root: Path = typer.Option(Path("artifacts"), "--output-root", envvar="DLRUN_OUTPUT_ROOT",
                                     help="Where run directories and the embedded MLflow store are."),
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Export a run's model with its preprocessing inside (raw inputs in), checked against the run's model
    on its test rows before it is written."""
    with _user_errors(debug, json_out):
        from dlrun.inference.export import export_run
        from dlrun.inference.serving_mlflow import describe_registered

        result = export_run(run, format_, output, output_root=output_root, tracking_uri=tracking_uri, fold=fold,
                            force=force, register=register)
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif not quiet:
            print(f"exported {result.format}: {result.path}", flush=True)
            print("\n".join(result.lines))
            print(f"checked on {result.rows} {result.part} rows: max absolute difference {result.max_abs_diff:.2g} "
                  f"(tolerance {result.tolerance:g})")
            print(f"described in {result.sidecar}")
            if result.registered:
                print(describe_registered(result.registered))


from dlrun.cli_models import explain, generate  # noqa: E402 - they use the options above

app.command()(generate)
app.command()(explain)


def main() -> None:
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "--json" not in sys.argv[1:]:
        app()
        return
    claim_stdout()
    try:  # --json: even a command-line usage error answers with one JSON object
        code = app(standalone_mode=False)
    except Exception as exc:  # Typer vendors click: recognise its usage errors by their interface
        if not (hasattr(exc, "show") and hasattr(exc, "format_message")):
            raise
        exc.show()
        code = getattr(exc, "exit_code", EXIT_USAGE)
        print_json({"status": "INVALID", "error": exc.format_message(), "exit_code": code})
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
