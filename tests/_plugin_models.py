"""Plugin model classes for tests (``model: {type: plugin, class: _plugin_models:…}``)."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="dlrun_test_models")
class TinyClassifier(keras.Model):
    """A subclassed classifier: Dense(units) → softmax over ``classes``."""

    def __init__(self, units=16, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.hidden = layers.Dense(units, activation="relu")
        self.out = layers.Dense(classes, activation="softmax")

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


@keras.saving.register_keras_serializable(package="dlrun_test_models")
class TwoOptimizerNet(TinyClassifier):
    """Takes a generator_optimizer besides its optimizer (as a plugin GAN would) and trains the
    output layer with it; its losses are its own (no compile.loss)."""

    def compile(self, optimizer="rmsprop", generator_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.generator_optimizer = keras.optimizers.get(generator_optimizer or "sgd")
        self.tracker = keras.metrics.Mean(name="own_loss")

    @property
    def metrics(self):
        return [self.tracker]

    def build_optimizers(self):
        self.optimizer.build(self.hidden.trainable_variables)
        self.generator_optimizer.build(self.out.trainable_variables)

    def train_step(self, data):
        import tensorflow as tf

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape(persistent=True) as tape:
            probabilities = self(x, training=True)
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
        for optimizer, layer in ((self.optimizer, self.hidden), (self.generator_optimizer, self.out)):
            optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_variables), layer.trainable_variables))
        self.tracker.update_state(loss)
        return {"own_loss": self.tracker.result()}

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.tracker.update_state(ops.mean(keras.losses.sparse_categorical_crossentropy(y, self(x))))
        return {"own_loss": self.tracker.result()}


class NotAModel:
    """A plain class: a recipe may not build it."""

    def __init__(self, **kwargs):
        raise AssertionError("never called")
