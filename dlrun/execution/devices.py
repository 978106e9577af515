"""Which GPUs and cores this host has, and how they are dealt out to local workers — found
without importing TensorFlow (the parent must not initialise CUDA before its workers do)."""

from __future__ import annotations

import os
import shutil
import subprocess

from dlrun.errors import UsageError


def visible_gpus() -> list[str]:
    """The GPUs jobs may use: ``CUDA_VISIBLE_DEVICES`` when set, else those ``nvidia-smi -L`` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if ids[:1] == ["-1"] else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def cpu_count() -> int:
    """The cores this process may run on (its affinity: a Slurm or container limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_gpus(text: str | None) -> list[str] | None:
    """``--gpus 0,1,3`` → ``["0", "1", "3"]``; None when not given."""
    if text is None:
        return None
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not ids or len(set(ids)) != len(ids):
        raise UsageError(f"--gpus {text!r}: give GPU ids separated by commas, each once (e.g. --gpus 0,1)")
    return ids


def check_gpus(ids: list[str]) -> list[str]:
    """``--gpus`` ids that this host has (refused, exit 2, naming the ones it has — or that it has none)."""
    have = visible_gpus()
    where = ("CUDA_VISIBLE_DEVICES hides every GPU" if os.environ.get("CUDA_VISIBLE_DEVICES") is not None
             else "nvidia-smi lists none" if shutil.which("nvidia-smi") else "there is no nvidia-smi")
    if not have:
        raise UsageError(f"--gpus {','.join(ids)}: this machine has no GPU that CUDA can see ({where}); leave "
                         f"--gpus out to train on the CPU, or run on a GPU server")
    missing = [g for g in ids if g not in have]
    if missing:
        raise UsageError(f"--gpus {','.join(ids)}: no GPU {', '.join(missing)} here; the GPUs this machine has "
                         f"are {','.join(have)}")
    return ids


def use_gpus_here(ids: list[str]) -> None:
    """Train in this process on GPUs ``ids`` only (a serial run): set before TensorFlow starts."""
    import sys

    if "tensorflow" in sys.modules:  # a notebook that already trained: CUDA's device list is fixed
        import tensorflow as tf

        physical = tf.config.list_physical_devices("GPU")
        order = visible_gpus()
        try:
            tf.config.set_visible_devices([physical[order.index(g)] for g in ids], "GPU")
        except (RuntimeError, IndexError, ValueError):
            raise UsageError(f"--gpus {','.join(ids)}: TensorFlow has already set up its GPUs in this process; "
                             f"choose them before the first run (restart the notebook, or set "
                             f"CUDA_VISIBLE_DEVICES)") from None
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)


def local_slots(workers: int | None, gpus: list[str] | None, gpus_per_job: int) -> list[dict]:
    """One device set per worker: ``gpus_per_job`` GPUs each from ``gpus`` (default: every
    visible one), and the cores shared out as TensorFlow threads. ``workers`` defaults to
    one per GPU group, else to the cores (at most 4)."""
    chosen = gpus is not None
    gpus = visible_gpus() if gpus is None else gpus
    cores = cpu_count()
    if gpus and gpus_per_job:
        groups = len(gpus) // gpus_per_job
        if groups == 0:
            raise UsageError(f"--gpus-per-job {gpus_per_job} with {len(gpus)} GPU(s) ({','.join(gpus)}): a job "
                             f"needs more GPUs than there are; lower --gpus-per-job")
        workers = workers or groups
        if workers > groups:
            raise UsageError(f"--workers {workers} with {len(gpus)} GPU(s) and --gpus-per-job {gpus_per_job}: at "
                             f"most {groups} workers get their own GPUs; use --workers {groups}, or "
                             f"--gpus-per-job 0 to train on the CPU")
        sets = [gpus[i * gpus_per_job:(i + 1) * gpus_per_job] for i in range(workers)]
        if chosen:  # after the counts: a wrong combination is said first, whatever the host
            check_gpus(gpus)
    else:
        workers = workers or max(1, min(4, cores))
        sets = [[] for _ in range(workers)]  # CUDA_VISIBLE_DEVICES="": no worker touches a GPU
    threads = max(1, cores // workers)
    return [{"gpus": gpu_set, "cpu_threads": threads} for gpu_set in sets]
