"""``dlrun explain RUN --image path``: what a trained run's convnet sees in an image (the book's 5.4).

The run's model is read as it was saved; the image is resized to its input size and scaled as
the run's data was (an image folder's ``rescale``), unless ``preprocessing`` says otherwise.
The same drawings as a recipe's ``task: explain`` (:func:`dlrun.training.tasks.draw_explanations`):
activation grids, filter patterns, the Grad-CAM heatmap over the image, into ``out_dir`` (default:
``explain/`` of the run's job directory), and ``explain.json`` describing them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from dlrun.errors import UsageError

PARTS = ("activations", "filters", "grad_cam")


def explain_run(ref: str, *, image: Path | None, output_root: Path, tracking_uri: str | None = None,
                fold: int | None = None, show: Sequence[str] = PARTS, layers: Sequence[str] = (),
                class_index: int | None = None, cam_layer: str | None = None, filters: int = 16, steps: int = 40,
                preprocessing=None, out_dir: Path | None = None, seed: int = 0, progress=None) -> dict:
    from pydantic import ValidationError

    from dlrun.recipe.task_schema import ExplainTask
    from dlrun.training.task_inputs import check_layers, run_network, task_image
    from dlrun.training.tasks import draw_explanations, explain_layers

    unknown = [part for part in show if part not in PARTS]
    if unknown:
        raise UsageError(f"--show {unknown[0]}: choose from {', '.join(PARTS)}")
    chosen = {part: {} for part in show}
    if "activations" in chosen and layers:
        chosen["activations"] = {"layers": list(layers)}
    if "filters" in chosen:
        chosen["filters"] = {"filters": filters, "steps": steps, **({"layers": list(layers)} if layers else {})}
    if "grad_cam" in chosen:
        chosen["grad_cam"] = {"class_index": class_index, "layer": cam_layer}
    try:
        spec = ExplainTask(kind="explain", run=ref, image=None if image is None else str(image), **chosen)
    except ValidationError as exc:
        raise UsageError(exc.errors()[0]["msg"].removeprefix("Value error, ").replace("'image'", "--image")) from None
    from dlrun.tf_runtime import configure_runtime

    configure_runtime(seed)  # TensorFlow imported quietly; the filter patterns' noise seeded
    network = run_network(ref, Path(output_root), tracking_uri, fold, preprocessing)
    check_layers(network.model, explain_layers(spec))
    pixels = task_image(str(image), Path.cwd(), network.image_size, network.channels) if image is not None else None
    out_dir = Path(out_dir) if out_dir is not None else network.job_dir / "explain"
    report = draw_explanations(network, pixels, out_dir, spec, progress=progress, seed=seed)
    report.update(run_dir=str(network.job_dir), image=None if image is None else str(image),
                  preprocessing=network.facts.get("preprocessing"))
    (out_dir / "explain.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "explain.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
