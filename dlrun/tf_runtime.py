"""Import TensorFlow once, quietly, and seed it.

TensorFlow's C++ start-up writes to file descriptor 2 before its logging is set up
(CUDA probing, oneDNN notes; TF_CPP_MIN_LOG_LEVEL cannot silence these, see
tensorflow#100442). Users see them as noise on every command, so the import runs with
fd 2 pointed at a temporary file that is replayed only if the import fails.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules or os.environ.get("DLRUN_VERBOSE_TF"):
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except Exception:  # show what TensorFlow said about why it could not load
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_frozen: set[str] = set()


def freeze_loaded_objects(after: str) -> None:
    """Leave the objects alive now — once ``after`` (``tensorflow``, ``mlflow``) has been imported:
    its modules' ~600,000 objects, which live as long as the process — out of every later garbage
    collection. A full collection (``keras.backend.clear_session()`` makes one between K-fold
    folds) then takes milliseconds instead of ~0.4 s. Once per library and process: a later run in
    the same process (a notebook, serial tuning trials) must not freeze an earlier run's garbage."""
    import gc

    if after not in _frozen:
        _frozen.add(after)
        gc.freeze()


def configure_runtime(seed: int, deterministic: bool = False) -> None:
    """Quiet TensorFlow, MLflow's schema notes, and seed Python, NumPy and TensorFlow."""
    import_tensorflow_quietly()
    freeze_loaded_objects(after="tensorflow")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import keras
    import tensorflow as tf

    grow_gpu_memory(tf)  # before anything touches a GPU
    tf.get_logger().setLevel(logging.ERROR)  # tf.function retracing notes between K-fold folds
    keras.utils.set_random_seed(seed)
    op_determinism(deterministic)


_determinism_ours = False  # op determinism on because a deterministic recipe ran in this process


def op_determinism(on: bool) -> None:
    """Op determinism for this run: the same ops in the same order give the same bits (slower on a
    GPU; tf.data's parallel maps run in order). A deterministic recipe turns it on; a later run
    without it in the same process (a notebook, serial tuning trials) turns it off again, unless
    the caller had turned it on. TensorFlow exports only the switch on; its switch off is internal."""
    global _determinism_ours
    import tensorflow as tf

    try:
        from tensorflow.python.framework import config
        is_on, switch_off = config.is_op_determinism_enabled, config.disable_op_determinism
    except (ImportError, AttributeError):  # another TensorFlow: on only, as before
        is_on, switch_off = None, None
    if on:
        _determinism_ours = _determinism_ours or (is_on is not None and not is_on())
        tf.config.experimental.enable_op_determinism()
    elif _determinism_ours and switch_off is not None:
        switch_off()
        _determinism_ours = False


def grow_gpu_memory(tf) -> None:
    """Let each visible GPU's memory grow as needed instead of TensorFlow taking nearly all of it
    at start, so several jobs (K-fold workers, tuning trials, a colleague's) can share one GPU.
    ``DLRUN_GPU_MEMORY_GROWTH=0`` (or TensorFlow's own ``TF_FORCE_GPU_ALLOW_GROWTH=false``) keeps
    TensorFlow's default: one job that wants the whole GPU and no fragmentation."""
    if os.environ.get("DLRUN_GPU_MEMORY_GROWTH", "1").lower() in ("0", "false", "no", "off"):
        return
    if os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "false":
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU is already in use in this process (a notebook's second run)
            pass
