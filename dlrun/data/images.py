"""Image folders (one sub-folder per class under ``train/``, ``validation/``, ``test/``) streamed
with ``keras.utils.image_dataset_from_directory``: images are decoded batch by batch from disk,
never all held in memory (the book's ``flow_from_directory``, 5.2.4).

With ``features:`` a frozen pretrained base runs over every image once and the model trains on
the cached feature arrays instead (the book's fast feature extraction, 5.3.1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.files import resolve_path
from dlrun.data.dataset import StreamedDataset
from dlrun.data.streams import array_stream
from dlrun.errors import DataError

# What image_dataset_from_directory reads (keras.src.utils.image_dataset_utils.ALLOWLIST_FORMATS).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_CHANNELS = {"rgb": 3, "grayscale": 1, "rgba": 4}
_LAYOUT_HINT = ("the book's cats_and_dogs_small layout: train/, validation/, test/, each with one "
                "sub-folder of images per class (cats/, dogs/)")


def load_image_directory(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    root = resolve_path(spec.path, base_dir).resolve()
    if not root.is_dir():
        raise DataError(f"data.path: no such folder: {root} — expected {_LAYOUT_HINT}")
    folders = {part: getattr(spec, part) for part in ("train", "validation", "test")}
    scans = {part: _scan(root, part, folder) for part, folder in folders.items() if folder is not None}
    class_names = _check_classes(scans, spec.label_mode)
    verified = verify_images({part: s["paths"] for part, s in scans.items()}, _CHANNELS[spec.color_mode])

    info = {
        "path": str(root),
        "class_names": class_names,
        "image_size": list(spec.image_size),
        "color_mode": spec.color_mode,
        "label_mode": spec.label_mode,
        "rescale": spec.rescale,
        "parts": {part: {"folder": folders[part], "files": s["files"], "per_class": s["per_class"]}
                  for part, s in scans.items()},
        "files": sum(s["files"] for s in scans.values()),
        "bytes_on_disk": sum(s["bytes"] for s in scans.values()),
        "batch_size": batch_size,
        "verified": verified,
    }
    directories = {part: root / folders[part] for part in scans}
    train_stream = None  # decoded images stream in tf.data's own order
    if spec.features is None:
        factories = {part: _part_factory(directory, spec, class_names, batch_size, seed,
                                         shuffle=(part == "train" and spec.shuffle))
                     for part, directory in directories.items()}
    else:
        factories, info["features"], train_stream = _cached_features(spec, base_dir, directories, class_names,
                                                                      batch_size, seed)
    return StreamedDataset(
        name=root.name,
        train=factories["train"],
        validation=factories.get("validation"),
        test=factories.get("test"),
        info=info,
        train_stream=train_stream,
    )


# --------------------------------------------------------------------------- folders


def _scan(root: Path, part: str, folder: str) -> dict:
    """Class sub-folders, image counts and bytes of one part, without reading any image."""
    directory = root / folder
    if not directory.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"data.{part}: no folder '{folder}' under {root} (found: {', '.join(present) or 'nothing'}) "
                        f"— expected {_LAYOUT_HINT}; set data.{part}: null to go without it")
    # image_dataset_from_directory takes every sub-folder as a class, in sorted order.
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data.{part}: {directory} has no class sub-folders — expected {_LAYOUT_HINT}")
    per_class, size, paths = {}, 0, []
    for name in classes:
        files = sorted(f for f in (directory / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        per_class[name] = len(files)
        size += sum(f.stat().st_size for f in files)
        paths += files
    if not paths:
        raise DataError(f"data.{part}: no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return {"classes": classes, "per_class": per_class, "files": len(paths), "bytes": size, "paths": paths}


def _check_classes(scans: dict, label_mode: str) -> list[str]:
    """Every part must have the training part's classes, so label i means the same class everywhere."""
    classes = scans["train"]["classes"]
    for part, scan in scans.items():
        if scan["classes"] != classes:
            missing = sorted(set(classes) - set(scan["classes"]))
            extra = sorted(set(scan["classes"]) - set(classes))
            raise DataError(f"data.{part}: its class folders {scan['classes']} differ from data.train's {classes}"
                            f"{f' (missing: {missing})' if missing else ''}{f' (extra: {extra})' if extra else ''}"
                            " — every part needs the same class sub-folders")
    if label_mode == "binary" and len(classes) != 2:
        raise DataError(f"data.label_mode: binary needs exactly 2 class folders, found {len(classes)} {classes} "
                        "— use label_mode: categorical (one-hot) or int (sparse)")
    return classes


def _part_factory(directory: Path, spec, class_names: list[str], batch_size: int, seed: int, *, shuffle: bool):
    """A factory of one part's batched tf.data pipeline: file paths are listed (and shuffled)
    up front, images decoded lazily per batch; the shuffle repeats, differently, every epoch."""

    def make():
        import keras
        import tensorflow as tf

        ds = keras.utils.image_dataset_from_directory(
            str(directory), labels="inferred", label_mode=spec.label_mode, class_names=class_names,
            color_mode=spec.color_mode, batch_size=batch_size, image_size=tuple(spec.image_size),
            shuffle=shuffle, seed=seed, verbose=False,
        )
        if spec.rescale is not None:
            scale = float(spec.rescale)
            ds = ds.map(lambda x, y: (x * scale, y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    return make


# --------------------------------------------------------------------------- verification

# TensorFlow's words for an image it cannot decode → the user's.
_DECODE_ERRORS = (
    ("input is empty", "the file is empty"),
    ("unknown image file format", "not a JPEG, PNG, GIF or BMP image"),
    ("jpeg::uncompress failed", "damaged or cut-short JPEG data"),
    ("invalid png", "damaged PNG data"),
    ("permission denied", "this user may not read it"),
)


def verify_images(paths_by_part: dict[str, list[Path]], channels: int) -> dict:
    """Decode every image once, as training will (TensorFlow's ``decode_image``, in parallel),
    so a file it cannot decode is named before the run starts instead of ending training with
    TensorFlow's op text on whichever batch meets it first. Costs about one epoch's decoding
    (4,000 150×150 JPEGs: about 1 s on 2 CPU cores)."""
    import tensorflow as tf

    started = time.perf_counter()
    paths = [str(p) for part in paths_by_part.values() for p in part]

    def decodes(path):
        return path, tf.shape(tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False))

    good = (tf.data.Dataset.from_tensor_slices(paths).map(decodes, num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors().map(lambda path, _: path))
    decoded = {p.decode() for p in good.as_numpy_iterator()}
    bad = [(part, p) for part, files in paths_by_part.items() for p in files if str(p) not in decoded]
    if bad:
        part, first = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(str(p) for _, p in bad[1:4])}{'…' if len(bad) > 4 else ''})"
        raise DataError(f"data.{part}: the image {first} cannot be decoded: {_decode_error(first, channels)}"
                        f"{more if len(bad) > 1 else ''} — remove or replace the file{'s' if len(bad) > 1 else ''}")
    return {"images": len(paths), "seconds": round(time.perf_counter() - started, 2)}


def _decode_error(path: Path, channels: int) -> str:
    """Why TensorFlow refuses ``path``, in a few words."""
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
    except Exception as error:  # noqa: BLE001 - any refusal is reported
        text = getattr(error, "message", None) or str(error)
        lowered = text.lower()
        for marker, words in _DECODE_ERRORS:
            if marker in lowered:
                return words
        text = text.split("}}")[-1].split("[Op:")[0]
        return " ".join(text.split()) or type(error).__name__
    return "it decodes now, but failed while it was checked (was it being written?)"


# --------------------------------------------------------------------------- cached features


def _cached_features(spec, base_dir: Path, directories: dict, class_names: list[str], batch_size: int,
                     seed: int) -> tuple[dict, dict, Any]:
    """Run the pretrained base once over every part and serve the features from memory (the
    training part also as a seekable seeded stream)."""
    from dlrun.model.pretrained import build_application

    feats = spec.features
    shape = (*spec.image_size, _CHANNELS[spec.color_mode])
    base = build_application(feats.application, weights=feats.weights, include_top=False, pooling=feats.pooling,
                             input_shape=shape, base_dir=Path(base_dir), where="data.features")
    base.trainable = False
    started = time.perf_counter()
    arrays = {}
    for part, directory in directories.items():
        # Read in file order; the training part's cached features are shuffled per epoch instead.
        arrays[part] = _extract(base, _part_factory(directory, spec, class_names, batch_size, seed, shuffle=False)())
    seconds = time.perf_counter() - started
    cached = {part: _feature_factory(x, y, batch_size, seed, shuffle=(part == "train" and spec.shuffle))
              for part, (x, y) in arrays.items()}
    info = {
        "application": feats.application,
        "weights": feats.weights,
        "pooling": feats.pooling,
        "feature_shape": list(arrays["train"][0].shape[1:]),
        "cached_bytes": int(sum(x.nbytes + y.nbytes for x, y in arrays.values())),
        "extraction_seconds": round(seconds, 2),
        "base_layers": len(base.layers),
        "base_params": int(base.count_params()),
    }
    x, y = arrays["train"]
    seeded = seed if spec.shuffle else None
    return cached, info, lambda: array_stream(x, y, batch_size, seeded)


def _extract(base, batches) -> tuple[np.ndarray, np.ndarray]:
    """The base's outputs and the labels of every batch (the book's extract_features, 5.3.1)."""
    features, labels = [], []
    for x, y in batches:
        features.append(np.asarray(base.predict_on_batch(x), dtype=np.float32))
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels)


def _feature_factory(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, *, shuffle: bool):
    def make():
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return make
