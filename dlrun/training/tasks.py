"""Tasks that are not ``fit`` (a recipe's ``task:``), beside the protocols: one registry, :data:`TASKS`.

Each kind's ``prepare(loaded, network)`` does what can go wrong before a run exists — the network
built (offline, ImageNet weights fail here with the Pretrained layer's message), the images read,
every named layer found — and returns a :class:`PreparedTask` whose ``run(ctx)`` does the work in
the run directory (PNG files, a ``losses.csv``), reports progress and returns the run's metrics.
The runner records it like any run: ``run.json``, MLflow params, metrics and every file as
artifacts, the same exit codes.

- ``deep_dream`` (8.2): :func:`dlrun.tasks.dream.deep_dream` into ``dream/``;
- ``style_transfer`` (8.3): :func:`dlrun.tasks.style.style_transfer` into ``style/``;
- ``explain`` (5.4): :func:`draw_explanations` into ``explain/`` (also ``dlrun explain RUN``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dlrun.training.task_inputs import TaskNetwork, check_layers, task_image, task_network


@dataclass
class PreparedTask:
    """A task ready to run: ``info`` (its inputs, for the run's ``data.json``) and ``run(ctx)``,
    which gets the protocols' context and returns the run's metrics."""

    kind: str
    run: Callable[[Any], dict[str, float]]
    info: dict = field(default_factory=dict)


def prepare_task(loaded, output_root: Path, tracking_uri: str | None = None) -> PreparedTask:
    """The recipe's task, tried before a run is created (bad input: exit 2, nothing written)."""
    spec = loaded.recipe.task
    network = task_network(spec, loaded.base_dir, output_root, tracking_uri)
    prepared = TASKS[spec.kind](spec, network, loaded.base_dir)
    prepared.info = {"task": spec.kind, **network.facts, **prepared.info}
    return prepared


def _progress(ctx, job: str, total: int, logs: dict | None = None):
    ctx.reporter.job_started(job, total)
    return lambda done, of: ctx.reporter.step(job, done, of, logs or {})


def _write_losses(folder: Path, header: list[str], rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "losses.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _log_curve(ctx, name: str, values: list[float]) -> None:
    if ctx.tracked is not None:
        for step, value in enumerate(values, 1):
            ctx.tracked.log_epoch({name: value}, step=step)


# --------------------------------------------------------------------------- deep dream (8.2)


def prepare_deep_dream(spec, network: TaskNetwork, base_dir: Path) -> PreparedTask:
    from dlrun.tasks.dream import deep_dream, octave_shapes

    check_layers(network.model, list(spec.layers))
    image = task_image(spec.image, base_dir, spec.image_size, network.channels)
    octave_shapes(image.shape[:2], spec.num_octave, spec.octave_scale)  # refuses octaves that shrink it away

    def run(ctx) -> dict[str, float]:
        folder = ctx.run_dir.path / "dream"
        total = spec.iterations * spec.num_octave
        result = deep_dream(network.model, image, spec.layers, folder, preprocessing=network.preprocessing,
                            step=spec.step, num_octave=spec.num_octave, octave_scale=spec.octave_scale,
                            iterations=spec.iterations, max_loss=spec.max_loss, save_every=spec.save_every,
                            progress=_progress(ctx, "deep_dream", total))
        _write_losses(folder, ["octave", "iteration", "loss"], result.losses)
        _log_curve(ctx, "dream_loss", [loss for _, _, loss in result.losses])
        ctx.reporter.note(f"dreamed {result.path} ({len(result.losses)} steps over octaves "
                          f"{', '.join(f'{h}×{w}' for h, w in result.octave_shapes)})")
        return {"dream_loss_first": result.losses[0][2], "dream_loss_last": result.losses[-1][2],
                "dream_steps": len(result.losses)}

    return PreparedTask("deep_dream", run, {"image": spec.image, "image_shape": list(image.shape)})


# --------------------------------------------------------------------------- style transfer (8.3)


def prepare_style_transfer(spec, network: TaskNetwork, base_dir: Path) -> PreparedTask:
    from dlrun.tasks.images import resize
    from dlrun.tasks.style import style_transfer

    check_layers(network.model, [spec.content_layer, *spec.style_layers])
    content = task_image(spec.content_image, base_dir, None, 3)
    height = spec.height
    width = max(1, round(content.shape[1] * height / content.shape[0]))  # the book's proportional width
    content = resize(content, (height, width))
    style = task_image(spec.style_image, base_dir, None, 3)

    def run(ctx) -> dict[str, float]:
        folder = ctx.run_dir.path / "style"
        result = style_transfer(network.model, content, style, folder, content_layer=spec.content_layer,
                                style_layers=spec.style_layers, content_weight=spec.content_weight,
                                style_weight=spec.style_weight, total_variation_weight=spec.total_variation_weight,
                                preprocessing=network.preprocessing, iterations=spec.iterations,
                                optimizer=spec.optimizer, learning_rate=spec.learning_rate, maxfun=spec.maxfun,
                                save_every=spec.save_every, progress=_progress(ctx, "style_transfer", spec.iterations))
        _write_losses(folder, ["iteration", "loss"], list(enumerate(result.losses, 1)))
        _log_curve(ctx, "style_loss", result.losses)
        ctx.reporter.note(f"generated {result.path} ({height}×{width})")
        return {"style_loss_start": result.start_loss, "style_loss_last": result.losses[-1],
                **{f"style_loss_{name}": value for name, value in result.parts.items()}}

    return PreparedTask("style_transfer", run, {"content_image": spec.content_image, "style_image": spec.style_image,
                                                "size": [height, width]})


# --------------------------------------------------------------------------- explain (5.4)


def explain_layers(spec) -> list[str]:
    """Every layer an explain spec names."""
    names = []
    for part in (spec.activations, spec.filters):
        names += list(part.layers or []) if part is not None else []
    if spec.grad_cam is not None and spec.grad_cam.layer:
        names.append(spec.grad_cam.layer)
    return names


def prepare_explain(spec, network: TaskNetwork, base_dir: Path) -> PreparedTask:
    check_layers(network.model, explain_layers(spec))
    size = tuple(spec.image_size) if spec.image_size else network.image_size
    image = task_image(spec.image, base_dir, size, network.channels) if spec.image else None

    def run(ctx) -> dict[str, float]:
        report = draw_explanations(network, image, ctx.run_dir.path / "explain", spec,
                                   progress=lambda job, total: _progress(ctx, job, total), seed=ctx.recipe.seed)
        ctx.run_dir.write_json("explain.json", report)
        for line in describe_explanations(report):
            ctx.reporter.note(line)
        return explanation_metrics(report)

    info = {"image": spec.image, "image_shape": None if image is None else list(image.shape)}
    return PreparedTask("explain", run, info)


def draw_explanations(network: TaskNetwork, image, out_dir: Path, spec, *, progress=None, seed: int = 0) -> dict:
    """The parts of an explain spec (activations, filters, grad_cam) drawn into ``out_dir``;
    returns what was written and found (layer shapes, filter activations, the class and score)."""
    from dlrun.tasks.explain import filter_patterns, grad_cam, layer_activations

    def steps(job: str, total: int):
        return progress(job, total) if progress else None

    report: dict = {"out_dir": str(out_dir)}
    model, prep = network.model, network.preprocessing
    if spec.activations is not None:
        part = spec.activations
        pictures = layer_activations(model, image, out_dir / "activations", layers=part.layers, preprocessing=prep,
                                     images_per_row=part.images_per_row, max_channels=part.max_channels,
                                     progress=steps("activations", len(part.layers or []) or 1))
        report["activations"] = [{"layer": p.layer, "file": str(p.path), "shape": list(p.shape)} for p in pictures]
    if spec.filters is not None:
        part = spec.filters
        pictures = filter_patterns(model, out_dir / "filters", layers=part.layers, filters=part.filters,
                                   steps=part.steps, step_size=part.step_size, size=part.size, preprocessing=prep,
                                   images_per_row=part.images_per_row, seed=seed,
                                   progress=steps("filters", part.steps * max(1, len(part.layers or []))))
        report["filters"] = [{"layer": p.layer, "file": str(p.path), "shape": list(p.shape),
                              "activation_before": p.activation[0], "activation_after": p.activation[1]}
                             for p in pictures]
    if spec.grad_cam is not None:
        part = spec.grad_cam
        cam = grad_cam(model, image, out_dir / "grad_cam.png", class_index=part.class_index, layer=part.layer,
                       preprocessing=prep, alpha=part.alpha)
        report["grad_cam"] = {"class_index": cam.class_index, "score": cam.score, "layer": cam.layer,
                              "file": str(cam.path), "heatmap_file": str(cam.heatmap_path)}
    return report


def describe_explanations(report: dict) -> list[str]:
    lines = []
    if "activations" in report:
        lines.append(f"activations of {len(report['activations'])} layers in {report['out_dir']}/activations")
    if "filters" in report:
        lines.append(f"filter patterns of {len(report['filters'])} layers in {report['out_dir']}/filters")
    if "grad_cam" in report:
        cam = report["grad_cam"]
        lines.append(f"Grad-CAM of class {cam['class_index']} (score {cam['score']:.4g}) at layer {cam['layer']}: "
                     f"{cam['file']}")
    return lines


def explanation_metrics(report: dict) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for entry in report.get("filters", []):
        metrics[f"filters_{entry['layer']}_activation_gain"] = entry["activation_after"] - entry["activation_before"]
    if "grad_cam" in report:
        metrics["grad_cam_class"] = report["grad_cam"]["class_index"]
        metrics["grad_cam_score"] = report["grad_cam"]["score"]
    return metrics


TASKS: dict[str, Callable[..., PreparedTask]] = {
    "deep_dream": prepare_deep_dream,
    "style_transfer": prepare_style_transfer,
    "explain": prepare_explain,
}
