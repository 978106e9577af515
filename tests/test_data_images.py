"""Image folders streamed with tf.data, cached pretrained features, the Pretrained layer,
fine-tuning's unfreezing, and augmentation layers that only act while training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data.sources import load_data
from dlrun.errors import DataError, ModelBuildError
from dlrun.recipe.schema import DataSpec, FineTune, KerasObject

SIZE = 32


def write_image_folder(root: Path, counts=None, size: int = SIZE, classes=("cats", "dogs")) -> Path:
    """train/validation/test × class folders of small PNGs: cats dark, dogs bright (learnable)."""
    from PIL import Image

    counts = counts or {"train": 8, "validation": 4, "test": 4}
    rng = np.random.default_rng(0)
    for part, n in counts.items():
        for c, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 40 + 150 * c / max(1, len(classes) - 1)
                pixels = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}.{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "cats_and_dogs_small")


def image_spec(path, **fields):
    return TypeAdapter(DataSpec).validate_python(
        {"source": "image_directory", "path": str(path), "image_size": [SIZE, SIZE], **fields})


def load(path, seed=1, batch_size=4, **fields):
    return load_data(image_spec(path, **fields), Path("."), seed=seed, batch_size=batch_size)


def labels_of(ds) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in ds])


# --------------------------------------------------------------------------- streaming


def test_parts_are_batched_tf_data_pipelines_with_consistent_labels(image_folder):
    ds = load(image_folder, rescale=1 / 255)
    train = ds.train()
    x_spec, y_spec = train.element_spec
    assert tuple(x_spec.shape) == (None, SIZE, SIZE, 3) and x_spec.dtype.name == "float32"
    assert tuple(y_spec.shape) == (None, 1)  # binary labels, batched
    assert ds.info["class_names"] == ["cats", "dogs"]
    assert ds.info["parts"]["train"] == {"folder": "train", "files": 16, "per_class": {"cats": 8, "dogs": 8}}
    assert ds.info["files"] == 32 and ds.info["bytes_on_disk"] == sum(
        f.stat().st_size for f in image_folder.rglob("*.png"))
    json.dumps(ds.info)  # written as is into the run directory
    batches = [(x.numpy(), y.numpy()) for x, y in ds.validation()]
    assert [len(x) for x, _ in batches] == [4, 4]
    x = np.concatenate([x for x, _ in batches])
    y = np.concatenate([y for _, y in batches])[:, 0]
    assert 0.0 <= x.min() and x.max() <= 1.0  # rescaled
    # Validation is read in order (cats first), and label 1 is the bright class everywhere.
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert x[y == 1].mean() > x[y == 0].mean() + 0.3


def test_images_are_decoded_from_disk_while_iterating_not_held_in_memory(image_folder):
    """Built pipelines hold file paths only: images rewritten after loading are what comes out."""
    from PIL import Image

    ds = load(image_folder)
    train = ds.train()  # the pipeline, built before the files change
    for f in (image_folder / "train").rglob("*.png"):
        Image.fromarray(np.full((SIZE, SIZE, 3), 7, np.uint8)).save(f)
    x = np.concatenate([x.numpy() for x, _ in train])
    assert x.shape == (16, SIZE, SIZE, 3) and np.all(x == 7.0)


def test_training_part_reshuffles_every_epoch_reproducibly(image_folder):
    ds = load(image_folder, batch_size=16)
    train = ds.train()
    first, second = labels_of(train)[:, 0], labels_of(train)[:, 0]
    assert sorted(first.tolist()) == [0] * 8 + [1] * 8
    assert not np.array_equal(first, second)  # a new order each epoch
    assert np.array_equal(first, labels_of(load(image_folder, batch_size=16).train())[:, 0])  # same seed
    assert labels_of(ds.test())[:, 0].tolist() == [0] * 4 + [1] * 4  # evaluation parts stay in order
    assert labels_of(load(image_folder, shuffle=False).train())[:, 0].tolist() == [0] * 8 + [1] * 8


def test_label_modes_and_grayscale(tmp_path):
    root = write_image_folder(tmp_path / "three", {"train": 2, "validation": 1}, classes=("a", "b", "c"))
    ds = load(root, test=None, label_mode="categorical", color_mode="grayscale")
    x, y = next(iter(ds.validation()))
    assert x.shape == (3, SIZE, SIZE, 1) and y.numpy().tolist() == np.eye(3).tolist()
    assert ds.test is None
    ds = load(root, test=None, label_mode="int")
    assert labels_of(ds.validation()).tolist() == [0, 1, 2]


@pytest.mark.parametrize("change, fields, words", [
    (lambda r: None, {"path": "nowhere"}, ["data.path", "no such folder", "nowhere", "cats_and_dogs_small"]),
    (lambda r: None, {"validation": "valid"}, ["data.validation", "'valid'", "found: test, train, validation",
                                              "data.validation: null"]),
    (lambda r: (r / "test" / "dogs").rename(r / "test" / "dog"), {},
     ["data.test", "['cats', 'dog']", "missing: ['dogs']", "extra: ['dog']"]),
    (lambda r: (r / "train" / "birds").mkdir() or (r / "validation" / "birds").mkdir()
     or (r / "test" / "birds").mkdir(), {}, ["label_mode", "exactly 2", "categorical"]),
    (lambda r: [f.unlink() for f in (r / "validation").rglob("*.png")], {}, ["data.validation", "no images"]),
])
def test_bad_folders_are_data_errors_naming_the_recipe_place(image_folder, change, fields, words):
    change(image_folder)
    path = image_folder.parent / fields.pop("path") if "path" in fields else image_folder
    with pytest.raises(DataError) as err:
        load(path, **fields)
    for word in words:
        assert word in str(err.value)


# --------------------------------------------------------------------------- cached features


def test_features_are_extracted_once_and_served_from_memory(image_folder):
    import keras

    keras.utils.set_random_seed(3)
    ds = load(image_folder, rescale=1 / 255, features={"application": "VGG16", "weights": None})
    x_spec, _ = ds.train().element_spec
    assert tuple(x_spec.shape) == (None, 1, 1, 512)  # VGG16 at 32×32
    info = ds.info["features"]
    assert info["application"] == "VGG16" and info["feature_shape"] == [1, 1, 512]
    assert info["cached_bytes"] == 32 * 512 * 4 + 32 * 4 and info["base_layers"] == 19
    # Features keep their labels: the cached validation part is in file order, like the images.
    assert labels_of(ds.validation())[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # The cache is independent of the files from now on (memory, not disk).
    for f in image_folder.rglob("*.png"):
        f.unlink()
    assert sum(len(x) for x, _ in ds.train()) == 16
    train = ds.train()
    train_labels = [labels_of(train)[:, 0] for _ in range(2)]
    assert not np.array_equal(*train_labels)  # shuffled every epoch


# --------------------------------------------------------------------------- Pretrained layer


def _context(tmp_path=Path(".")):
    from dlrun.model.builder import BuildContext

    return BuildContext(base_dir=tmp_path)


def test_pretrained_layer_takes_the_previous_layers_shape_and_records_facts():
    import keras

    from dlrun.model.builder import build_model
    from dlrun.recipe.schema import SequentialModel

    context = _context()
    spec = SequentialModel.model_validate({"layers": [
        {"Pretrained": {"application": "VGG16", "weights": None}}, "Flatten",
        {"Dense": {"units": 1, "activation": "sigmoid"}}]})
    model = build_model(spec, (48, 48, 3), context=context)
    assert tuple(model.layers[1].output.shape) == (None, 512) and model.output_shape == (None, 1)  # 1×1×512
    assert model.layers[0].name == "vgg16" and not model.layers[0].trainable  # frozen by default
    assert len(model.trainable_weights) == 2  # only the Dense kernel and bias
    assert context.facts["pretrained"]["vgg16"] == {
        "application": "VGG16", "weights": None, "trainable": False, "layers": 19, "params": 14714688}
    # The nested base is saved and reloaded with the model.
    assert isinstance(model.layers[0], keras.Model)


def test_pretrained_local_weights_file_is_loaded(tmp_path):
    from dlrun.model.pretrained import make_pretrained

    first = make_pretrained({"application": "VGG16", "weights": None}, _context(tmp_path), "where")
    first.save_weights(tmp_path / "vgg16_notop.weights.h5")
    again = make_pretrained({"application": "VGG16", "weights": "vgg16_notop.weights.h5", "name": "again"},
                            _context(tmp_path), "where")
    assert again.name == "again"
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelBuildError, match="no such weights file.*missing.h5.*or null"):
        make_pretrained({"application": "VGG16", "weights": "missing.h5"}, _context(tmp_path), "model.layers[0]")


def test_imagenet_weights_offline_fail_fast_with_a_clear_error(monkeypatch):
    """Simulated offline: Keras' get_file raises what it raises when the host can't be resolved."""
    from keras.src.utils import file_utils

    from dlrun.model.pretrained import make_pretrained

    def offline(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ModelBuildError) as err:
        make_pretrained({"application": "VGG16", "weights": "imagenet"}, _context(), "model.layers[4] (Pretrained)")
    text = str(err.value)
    for words in ("model.layers[4] (Pretrained).weights", "ImageNet weights of VGG16 can't be downloaded",
                  "no internet", "weights: null", "local file"):
        assert words in text


def test_unknown_application_suggests_a_name():
    from dlrun.model.pretrained import make_pretrained

    with pytest.raises(ModelBuildError, match="unknown keras.applications model 'VGG_16'.*did you mean 'VGG16'"):
        make_pretrained({"application": "VGG_16", "weights": None}, _context(), "model.layers[0]")


# --------------------------------------------------------------------------- fine-tuning


def _vgg_model():
    import keras

    from dlrun.model.pretrained import make_pretrained

    base = make_pretrained({"application": "VGG16", "weights": None}, _context(), "w")
    return keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.Flatten(), keras.layers.Dense(1)])


def fine_tune(layer="vgg16", unfreeze_from="block5_conv1"):
    return FineTune(layer=layer, unfreeze_from=unfreeze_from, optimizer=KerasObject.model_validate("rmsprop"), epochs=1)


def test_unfreeze_leaves_layers_before_the_named_one_frozen():
    from dlrun.model.finetune import unfreeze

    model = _vgg_model()
    assert len(model.trainable_weights) == 2
    facts = unfreeze(model, fine_tune())
    base = model.get_layer("vgg16")
    names = [layer.name for layer in base.layers]
    start = names.index("block5_conv1")
    assert base.trainable
    assert all(not layer.trainable for layer in base.layers[:start])
    assert all(layer.trainable for layer in base.layers[start:])
    trainable = {w.path.split("/")[0] for w in model.trainable_weights if "sequential" not in w.path}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3"}
    assert facts["trainable_layers"] == 3 and facts["frozen_layers"] == 10
    assert facts["trainable_params"] == 3 * (3 * 3 * 512 * 512 + 512) + 512 + 1


@pytest.mark.parametrize("spec, words", [
    (fine_tune(layer="vgg"), ["fit.fine_tune.layer", "no nested model 'vgg'", "did you mean 'vgg16'"]),
    (fine_tune(unfreeze_from="block5_cov1"), ["fit.fine_tune.unfreeze_from", "did you mean 'block5_conv1'",
                                              "its layers: input_layer", "block1_conv1, block1_conv2", "block5_pool)"]),
])
def test_unfreeze_names_what_exists(spec, words):
    from dlrun.model.finetune import unfreeze

    with pytest.raises(ModelBuildError) as err:
        unfreeze(_vgg_model(), spec)
    for word in words:
        assert word in str(err.value)


def test_unfreeze_without_a_nested_model_says_to_add_one():
    import keras

    from dlrun.model.finetune import unfreeze

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ModelBuildError, match="no nested model to fine-tune.*Pretrained"):
        unfreeze(model, fine_tune())


# --------------------------------------------------------------------------- augmentation


def test_augmentation_layers_act_in_training_only(recipes_dir):
    """The augmented recipe's model: identical outputs at evaluation, different while training."""
    import keras

    from dlrun.model.builder import build_model
    from dlrun.recipe.loading import load_recipe

    loaded = load_recipe(recipes_dir / "dogs_vs_cats_augmented.yaml",
                         [f"data.path={Path(__file__).parent}"])  # any folder: the data isn't read
    keras.utils.set_random_seed(0)
    model = build_model(loaded.recipe.model, (64, 64, 3))
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((8, 64, 64, 3)).astype("float32")
    y = np.array([0, 1] * 4, "float32")[:, None]
    evaluation = [model(x, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(*evaluation)
    assert model.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    augment = keras.Sequential(model.layers[:4])  # the random layers alone
    np.testing.assert_array_equal(augment(x, training=False).numpy(), x)  # untouched at evaluation
    assert not np.allclose(augment(x, training=True).numpy(), augment(x, training=True).numpy())
    assert not np.allclose(model(x, training=True).numpy(), evaluation[0])
