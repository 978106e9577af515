"""The process-wide TensorFlow settings a run makes (dlrun.tf_runtime)."""

from __future__ import annotations

import pytest

tf_config = pytest.importorskip("tensorflow.python.framework.config")


@pytest.fixture
def determinism_off():
    """Start with op determinism off (another test in this worker may have turned it on) and put
    back what was there."""
    from dlrun import tf_runtime

    before = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    tf_runtime._determinism_ours = False
    yield
    (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()
    tf_runtime._determinism_ours = False


def test_a_deterministic_run_does_not_leave_op_determinism_on_for_the_next_run(determinism_off):
    """A notebook (or serial tuning) runs a deterministic recipe, then one without: the second
    must not run with deterministic ops (slower on a GPU, tf.data's parallel maps in order)."""
    from dlrun.tf_runtime import configure_runtime

    configure_runtime(1, deterministic=True)
    assert tf_config.is_op_determinism_enabled()
    configure_runtime(1, deterministic=True)  # a second deterministic run: still on, still dlrun's
    configure_runtime(1, deterministic=False)
    assert not tf_config.is_op_determinism_enabled()


def test_op_determinism_the_caller_turned_on_is_left_on(determinism_off):
    import tensorflow as tf

    from dlrun.tf_runtime import configure_runtime

    tf.config.experimental.enable_op_determinism()  # the user's own, before any run
    configure_runtime(1, deterministic=True)
    configure_runtime(1, deterministic=False)
    assert tf_config.is_op_determinism_enabled()
