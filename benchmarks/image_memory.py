"""Image-folder memory: peak RSS of a dlrun image-directory run vs. the data's size on disk, its
decoded size in memory (n × H × W × 3 × float32) and a plain Keras script over the same folder.

Each side runs in its own fresh process; the parent reads that child's peak RSS from
``os.wait4`` (``ru_maxrss``). Two more children only import (TensorFlow/Keras and the model;
then also MLflow, matplotlib and dlrun's runner), so what the data adds can be told apart from
the libraries' own footprint. Usage and results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "dogs_vs_cats" / "cats_and_dogs_small_150"
RECIPE = ROOT / "recipes" / "dogs_vs_cats_scratch.yaml"

# The book's 5.2.3 convnet, written out for the plain Keras side (as in the recipe).
MODEL = """
def book_model(keras, size):
    L = keras.layers
    return keras.Sequential([keras.Input((size, size, 3)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(128, 3, activation="relu"),
        L.MaxPooling2D(2), L.Flatten(), L.Dense(512, activation="relu"), L.Dense(1, activation="sigmoid")])
"""

IMPORT_ONLY = MODEL + """
import keras
model = book_model(keras, {size})
model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
"""

PLAIN_KERAS = MODEL + """
import keras, tensorflow as tf
keras.utils.set_random_seed(42)
def part(name, shuffle):
    ds = keras.utils.image_dataset_from_directory({data!r} + "/" + name, label_mode="binary", image_size=({size}, {size}),
                                                  batch_size=20, shuffle=shuffle, seed=42, verbose=False)
    return ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
model = book_model(keras, {size})
model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
train = part("train", True)
if {steps}:
    train = train.repeat()
model.fit(train, epochs={epochs}, steps_per_epoch={steps} or None, validation_data=part("validation", False), verbose=0)
print("test", model.evaluate(part("test", False), verbose=0, return_dict=True))
"""

# What dlrun imports besides Keras (MLflow, matplotlib for the plots), with no data.
DLRUN_IMPORTS = IMPORT_ONLY + """
import mlflow, mlflow.keras, matplotlib.pyplot, dlrun.training.runner
"""

DLRUN = """
import dlrun
summary = dlrun.train({recipe!r}, {overrides!r}, output_root={out!r})
print("metrics", summary.metrics)
"""


def run_child(code: str) -> tuple[float, float, str]:
    """Run ``code`` in a fresh Python; return (peak RSS in MiB, seconds, last output line)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}):\n{output[-3000:]}")
    last = [line for line in output.splitlines() if line.startswith(("test", "metrics"))]
    return usage.ru_maxrss / 1024, seconds, (last[-1] if last else "")


def folder_facts(data: Path, size: int) -> dict:
    files = [f for f in data.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    train = [f for f in files if f.relative_to(data).parts[0] == "train"]
    per_image = size * size * 3 * 4  # float32 RGB, as the pipeline hands it to the model
    return {"files": len(files), "train_files": len(train), "disk_mib": sum(f.stat().st_size for f in files) / 2**20,
            "decoded_all_mib": len(files) * per_image / 2**20, "decoded_train_mib": len(train) * per_image / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (0: one pass over the training images)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no image folder at {args.data} (the shared dogs-vs-cats copy); give --data")
    size = 150
    facts = folder_facts(args.data, size)
    overrides = [f"data.path={args.data}", f"fit.epochs={args.epochs}"]
    if args.steps:
        overrides.append(f"fit.steps_per_epoch={args.steps}")
    with tempfile.TemporaryDirectory() as out:
        runs = {
            "import + model only": run_child(IMPORT_ONLY.format(size=size)),
            "+ dlrun's imports": run_child(DLRUN_IMPORTS.format(size=size)),
            "plain Keras": run_child(PLAIN_KERAS.format(data=str(args.data), size=size, steps=args.steps,
                                                        epochs=args.epochs)),
            "dlrun": run_child(DLRUN.format(recipe=str(RECIPE), overrides=overrides, out=out)),
        }
    print(f"data: {args.data}")
    print(f"  {facts['files']} images ({facts['train_files']} train), {facts['disk_mib']:.1f} MiB on disk; decoded "
          f"at {size}×{size}×3 float32: {facts['decoded_all_mib']:.0f} MiB all, {facts['decoded_train_mib']:.0f} MiB train")
    print(f"{'process':<22}{'peak RSS MiB':>14}{'seconds':>10}  result")
    for name, (rss, seconds, last) in runs.items():
        print(f"{name:<22}{rss:>14.0f}{seconds:>10.1f}  {last[:90]}")
    base = runs["import + model only"][0]
    dl, keras_rss = runs["dlrun"][0], runs["plain Keras"][0]
    ratios = {
        "dlrun / plain Keras": dl / keras_rss,
        "dlrun / disk size": dl / facts["disk_mib"],
        "dlrun / decoded (all parts)": dl / facts["decoded_all_mib"],
        "dlrun above import-only / decoded (all parts)": (dl - base) / facts["decoded_all_mib"],
        "plain Keras above import-only / decoded (all parts)": (keras_rss - base) / facts["decoded_all_mib"],
        "dlrun above its imports / decoded (all parts)": (dl - runs["+ dlrun's imports"][0]) / facts["decoded_all_mib"],
    }
    for name, value in ratios.items():
        print(f"  {name:<54}{value:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "runs": {k: {"peak_rss_mib": v[0], "seconds": v[1],
                                                                      "result": v[2]} for k, v in runs.items()},
                                         "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
