"""Runs that would finish "ok" with a wrong result, as a user meets them on the command line:
a training part of one class, parts taken in class order (hold-out and every K-fold fold), a rare
class missing from a small part, nothing held out, an image folder with one class of images,
steps beyond a streamed part. Refusals exit 2 before anything is created; warnings are said even
with --quiet and recorded in data.json."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_data_images import write_image_folder  # noqa: E402


def dlrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dlrun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def nothing_created(folder: Path) -> bool:
    return not (folder / "artifacts").exists()


MODEL = """\
model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dense: {{units: {units}, activation: {activation}}}
compile:
  optimizer: rmsprop
  loss: {loss}
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 16
"""


def classifier(units=3, loss="sparse_categorical_crossentropy", activation="softmax") -> str:
    return MODEL.format(units=units, loss=loss, activation=activation)


def write_classes_csv(path: Path, labels) -> Path:
    """Two features and a class column holding ``labels``, in that order."""
    rng = np.random.default_rng(0)
    labels = np.asarray(labels)
    rows = [f"{a:.3f},{b:.3f},{c}" for c, (a, b) in zip(labels, rng.normal(labels[:, None], 0.5, (len(labels), 2)))]
    path.write_text("f1,f2,label\n" + "\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------- the case


def write_reviews(folder: Path, per_class: int = 30) -> Path:
    """aclImdb's layout in small: train/{neg,pos}, test/{neg,pos}, files read in class order."""
    rng = random.Random(0)
    words = {"neg": "bad awful boring poor dull".split(), "pos": "great superb fine lovely good".split()}
    for part, n in (("train", per_class), ("test", per_class // 3)):
        for label, vocabulary in words.items():
            (folder / part / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / part / label / f"{i:03d}.txt").write_text(" ".join(rng.choices(vocabulary, k=8)))
    return folder


TEXT_RECIPE = """\
name: reviews
data:
  source: text_directory
  path: reviews
  limit: 30
  split:
    validation: {first: 10}
preprocessing:
  - {transform: text_vectorization, max_tokens: 50, output_sequence_length: 8}
model:
  layers:
    - Embedding: {input_dim: 50, output_dim: 4}
    - Flatten
    - Dense: {units: 1, activation: sigmoid}
compile:
  optimizer: rmsprop
  loss: binary_crossentropy
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 8
"""


def test_a_limit_that_keeps_one_class_is_refused_before_training(tmp_path):
    """text_directory reads files in class order: `limit` without `shuffle` kept one class, and the
    run reported val_accuracy=1 without a word. Now: exit 2, the limit and the fix named."""
    write_reviews(tmp_path / "reviews")
    (tmp_path / "reviews.yaml").write_text(TEXT_RECIPE)
    refused = dlrun("train", "reviews.yaml", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert ("data: the training data holds one class only (class 0 ('neg'): 30 rows), and a classifier "
            "(binary_crossentropy) learns nothing from one class — data.limit: 30 kept the first 30 of 60 rows; "
            "set data.shuffle: true") in refused.stderr
    assert "Traceback" not in refused.stderr and nothing_created(tmp_path)


@pytest.mark.slow
def test_with_shuffle_the_same_run_trains_on_both_classes(tmp_path):
    write_reviews(tmp_path / "reviews")
    (tmp_path / "reviews.yaml").write_text(TEXT_RECIPE)
    run = dlrun("train", "reviews.yaml", "--set", "data.shuffle=true", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    data = json.loads((Path(json.loads(run.stdout)["run_dir"]) / "data.json").read_text())
    assert data["train_class_counts"] == {"0": 15, "1": 15} and "warnings" not in data


# --------------------------------------------------------------------------- parts in class order


@pytest.mark.slow
def test_parts_taken_in_class_order_are_refused_for_the_holdout_split_and_every_fold(tmp_path):
    write_classes_csv(tmp_path / "classes.csv", np.repeat([0, 1, 2], 100))  # in class order
    (tmp_path / "ordered.yaml").write_text(
        "data: {source: csv, path: classes.csv, target: label, split: {validation: {last: 60}}}\n" + classifier())
    holdout = dlrun("train", "ordered.yaml", cwd=tmp_path)
    assert holdout.returncode == 2, holdout.stderr
    assert ("data: the validation part holds no row of class 0 (the training part has 100 of its 240 rows, so "
            "about 20 were expected); no row of class 1") in holdout.stderr
    assert "not chance: its rows were taken in class order; set data.shuffle: true" in holdout.stderr

    kfold = dlrun("kfold", "ordered.yaml", "--k", "3", "--set", "evaluation.shuffle=false",
                  "--set", "evaluation.stratify=false", cwd=tmp_path)
    assert kfold.returncode == 2, kfold.stderr
    assert "data: the validation part of fold_1 holds 100 rows of class 0, a class the training part never " \
           "shows" in kfold.stderr
    assert "set data.shuffle: true (it shuffles the rows once, seeded, before data.limit and the splits) or " \
           "evaluation.shuffle: true" in kfold.stderr
    assert nothing_created(tmp_path)


@pytest.mark.slow
def test_a_rare_class_missing_from_a_small_validation_part_is_a_warning_heard_with_quiet(tmp_path):
    # The 3 rows of class 0 come first, the validation part is the last 20: chance could do that.
    write_classes_csv(tmp_path / "rare.csv", [0, 0, 0, *np.random.default_rng(1).permutation(np.repeat([1, 2], 100))[3:]])
    (tmp_path / "rare.yaml").write_text(
        "data: {source: csv, path: rare.csv, target: label, split: {validation: {last: 20}}}\n" + classifier())
    run = dlrun("train", "rare.yaml", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    warning = ("dlrun: warning: the validation part holds no row of class 0 (the training part has 3 of its 180 "
               "rows, so about 0 were expected)")
    assert warning in run.stderr and run.stdout == ""
    (run_dir,) = (tmp_path / "artifacts" / "runs" / "rare").iterdir()
    (recorded,) = json.loads((run_dir / "data.json").read_text())["warnings"]
    assert recorded.startswith(warning.removeprefix("dlrun: warning: "))


@pytest.mark.slow
def test_a_holdout_run_with_nothing_held_out_says_so_even_with_quiet(tmp_path):
    write_classes_csv(tmp_path / "all.csv", np.random.default_rng(1).permutation(np.repeat([0, 1], 40)))
    (tmp_path / "all.yaml").write_text("data: {source: csv, path: all.csv, target: label}\n" + classifier(units=2))
    run = dlrun("train", "all.yaml", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert ("dlrun: warning: nothing is held out: the data has no validation part and no test split, so every "
            "metric of this run is measured on the rows it trained on — hold a part out with "
            "data.split.validation: {fraction: 0.2} (or data.split.test)") in run.stderr
    (run_dir,) = (tmp_path / "artifacts" / "runs" / "all").iterdir()
    assert json.loads((run_dir / "data.json").read_text())["warnings"][0].startswith("nothing is held out")


# --------------------------------------------------------------------------- image folders, steps


IMAGE_RECIPE = """\
name: pets
data: {source: image_directory, path: pets, image_size: [16, 16], rescale: 0.00392156862745098}
model:
  layers:
    - Flatten
    - Dense: {units: 1, activation: sigmoid}
compile:
  optimizer: rmsprop
  loss: binary_crossentropy
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 4
"""


@pytest.mark.slow
def test_image_folders_with_one_class_of_images_or_steps_beyond_a_part(tmp_path):
    folder = write_image_folder(tmp_path / "pets", {"train": 6, "validation": 3, "test": 3}, size=16)
    (tmp_path / "pets.yaml").write_text(IMAGE_RECIPE)
    # 12 training images in batches of 4 are 3 batches a pass; 6 validation images 2 batches.
    too_many = dlrun("train", "pets.yaml", "--set", "fit.validation_steps=5", cwd=tmp_path)
    assert too_many.returncode == 2, too_many.stderr
    assert ("--set #1 'fit.validation_steps=5': fit.validation_steps: 5 batches, but the validation part is 2 "
            "batches (6 images in batches of 4): Keras would run out of validation data — set "
            "fit.validation_steps: 2 or less") in too_many.stderr
    assert "1 problem in the recipe; nothing was run." in too_many.stderr

    repeated = dlrun("train", "pets.yaml", "-q", "--set", "fit.steps_per_epoch=5", cwd=tmp_path)
    assert repeated.returncode == 0, repeated.stderr
    assert ("dlrun: warning: fit.steps_per_epoch: 5 batches an epoch are 1.7 passes over the training part "
            "(12 images in 3 batches of 4), so every epoch repeats batches") in repeated.stderr

    for image in (folder / "train" / "dogs").iterdir():
        image.unlink()
    shutil.rmtree(tmp_path / "artifacts")
    one_class = dlrun("train", "pets.yaml", cwd=tmp_path)
    assert one_class.returncode == 2, one_class.stderr
    assert (f"data.train: only the class folder 'cats' of {folder}/train holds images (6; dogs/ empty), and a "
            f"classifier (binary_crossentropy) learns nothing from one class") in one_class.stderr
    assert nothing_created(tmp_path)
