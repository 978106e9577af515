"""``dlrun generate`` and ``dlrun explain``: a trained run's model made to write text or images,
or looked inside (the book's 8.1, 8.4–8.5 and 5.4). Registered on the app by :mod:`dlrun.cli`
(import that module, not this one); the library calls are :mod:`dlrun.inference.generate` and
:mod:`dlrun.inference.explain_run`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from dlrun.cli import DebugOption, FoldOption, JsonOption, QuietOption, TrackingOption, _err, _user_errors
from dlrun.json_output import print_json

# -o names what these commands write; the output root takes its long name only (as in predict).
RunsRootOption = typer.Option(Path("artifacts"), "--output-root", envvar="DLRUN_OUTPUT_ROOT",
                              help="Where the runs are (run names and ids are looked up there).")


def generate(
    run: str = typer.Argument(..., help="The run: its directory, MLflow run id, recipe file or name (latest run)."),
    temperature: Optional[List[float]] = typer.Option(None, "--temperature", "-t", min=0.0,
                                                      help="Text: the sampling temperature (repeatable; default 0.5)."),
    length: int = typer.Option(400, "--length", "-l", min=1, help="Text: characters to write."),
    seed_text: Optional[str] = typer.Option(None, "--seed-text", help="Text: what the text starts from (default: "
                                                                      "a random window of the run's text)."),
    n: int = typer.Option(16, "-n", min=1, help="Images: how many, in one grid."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Images: the grid PNG to write (text: a "
                                                                      "file for the text instead of stdout)."),
    seed: int = typer.Option(0, "--seed", help="The random seed of the latent points or the sampling."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    fold: Optional[int] = FoldOption,
    output_root: Path = RunsRootOption,
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Write text with a character-level run's model (8.1), or a grid of images with a VAE's or GAN's (8.4, 8.5)."""
    with _user_errors(debug, json_out):
        from dlrun.errors import UsageError
        from dlrun.inference.generate import generate as run_generate

        result = run_generate(run, output_root=output_root, tracking_uri=tracking_uri, fold=fold,
                              temperatures=temperature or [0.5], length=length, seed_text=seed_text, n=n,
                              output=output, seed=seed, force=force)
        if result.kind == "text" and output is not None:
            if output.exists() and not force:
                raise UsageError(f"{output} exists: choose another name, or --force to replace it")
            output.write_text(_text_blocks(result.texts, len(result.texts) > 1), encoding="utf-8")
        if json_out:
            print_json({"status": "OK", **result.to_dict()})
        elif result.kind == "text" and output is None:
            sys.stdout.write(_text_blocks(result.texts, len(result.texts) > 1))
        elif not quiet:
            _err(f"wrote {result.image if result.kind == 'images' else output} ({result.n or len(result.texts)} "
                 f"{'images' if result.kind == 'images' else 'texts'})")


def _text_blocks(texts: list[dict], headers: bool) -> str:
    blocks = []
    for entry in texts:
        fraction = "" if entry["word_fraction"] is None else f" · words in the run's text: {entry['word_fraction']:.2f}"
        head = f"--- temperature {entry['temperature']:g}{fraction}\n" if headers else ""
        blocks.append(f"{head}{entry['seed']}{entry['text']}\n")
    return "".join(blocks)


def explain(
    run: str = typer.Argument(..., help="The run: its directory, MLflow run id, recipe file or name (latest run)."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="The image to look at (activations, Grad-CAM)."),
    show: Optional[List[str]] = typer.Option(None, "--show", metavar="activations|filters|grad_cam",
                                             help="What to draw (repeatable; default all three, filters alone "
                                                  "without --image)."),
    layers: Optional[List[str]] = typer.Option(None, "--layers", help="Layers for activations and filters "
                                                                      "(repeatable; default every conv/pool layer)."),
    class_index: Optional[int] = typer.Option(None, "--class", min=0, help="Grad-CAM: the class (default: the "
                                                                          "predicted one)."),
    cam_layer: Optional[str] = typer.Option(None, "--cam-layer", help="Grad-CAM: the layer (default: the last "
                                                                      "convolution layer)."),
    filters: int = typer.Option(16, "--filters", min=1, help="Filter patterns: the first N filters of each layer."),
    steps: int = typer.Option(40, "--steps", min=1, help="Filter patterns: gradient ascent steps."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="How pixels reach the model: none, "
                                                                              "caffe, tf, torch or a factor (default: "
                                                                              "the run's rescale)."),
    out_dir: Optional[Path] = typer.Option(None, "--output", "-o", help="The folder to write (default: the run's "
                                                                       "explain/)."),
    fold: Optional[int] = FoldOption,
    output_root: Path = RunsRootOption,
    tracking_uri: Optional[str] = TrackingOption,
    json_out: bool = JsonOption,
    quiet: bool = QuietOption,
    debug: bool = DebugOption,
) -> None:
    """Look inside a trained run's convnet (5.4): activations, filter patterns and a Grad-CAM heatmap."""
    with _user_errors(debug, json_out):
        from dlrun.inference.explain_run import PARTS, explain_run
        from dlrun.training.tasks import describe_explanations

        parts = show or (PARTS if image is not None else ["filters"])
        report = explain_run(run, image=image, output_root=output_root, tracking_uri=tracking_uri, fold=fold,
                             show=parts, layers=layers or (), class_index=class_index, cam_layer=cam_layer,
                             filters=filters, steps=steps, preprocessing=_factor(preprocessing), out_dir=out_dir)
        if json_out:
            print_json({"status": "OK", **report})
        elif not quiet:
            for line in describe_explanations(report):
                print(line)


def _factor(text: Optional[str]):
    """A rescale factor written as a number (``0.00392``, ``1/255``), else the mode name as given."""
    if text is None:
        return None
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        return text
