"""``--executor``, ``--workers``, ``--gpus``, ``--gpus-per-job``, ``--ray-address`` and
``--executor-profile`` → an executor, refused before anything starts when it cannot work.

A profile is a YAML file of one executor's settings (``configs/executors/slurm.yaml``);
flags given on the command line override it. ``--workers N`` (N > 1) alone means ``local``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dlrun.errors import UsageError, did_you_mean

EXECUTORS = ("serial", "local", "ray", "slurm")
PROFILE_KEYS = {
    "local": {"workers", "gpus", "gpus_per_job"},
    "ray": {"address", "workers", "gpus_per_job", "cpus_per_job", "shared_filesystem"},
    "slurm": {"cluster", "partition", "time", "gpus_per_job", "cpus_per_job", "mem_gb", "array_parallelism",
              "account", "qos", "constraint", "setup", "additional", "job_name", "shared_filesystem"},
    "serial": set(),
}


@dataclass
class ExecutorOptions:
    executor: str = "serial"
    workers: int | None = None
    gpus: str | None = None  # "0,1,3"
    gpus_per_job: int | None = None
    ray_address: str | None = None
    profile: Path | None = None

    def kind(self) -> str:
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor '{self.executor}' is not one of {', '.join(EXECUTORS)}"
                             f"{did_you_mean(self.executor, EXECUTORS)}")
        if self.executor == "serial" and (self.workers or 1) > 1:
            return "local"  # --workers 2 alone: worker processes on this host
        return self.executor


def load_profile(path: Path | None, kind: str) -> dict:
    """The profile's settings for ``kind`` (its ``executor:`` key, if any, must agree)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--executor-profile {path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--executor-profile {path}: expected a mapping of settings")
    named = data.pop("executor", kind)
    if named != kind:
        raise UsageError(f"--executor-profile {path} is a profile for '{named}', not for --executor {kind}")
    for key in data:
        if key not in PROFILE_KEYS[kind]:
            raise UsageError(f"--executor-profile {path}: '{key}' is not a {kind} setting"
                             f"{did_you_mean(key, PROFILE_KEYS[kind])} (it takes: "
                             f"{', '.join(sorted(PROFILE_KEYS[kind])) or 'nothing'})")
    return data


def make_executor(options: ExecutorOptions, *, output_root: Path, tracking_uri: str | None, tuning: bool = False,
                  storage: str | None = None):
    """The executor the options describe (None: serial, in this process), checked: a ray or
    slurm executor whose workers could not reach the run is refused (UsageError) here."""
    from dlrun.execution.reach import check_reachable

    kind = options.kind()
    profile = load_profile(options.profile, kind)
    workers = options.workers or profile.get("workers")
    gpus_per_job = options.gpus_per_job if options.gpus_per_job is not None else profile.get("gpus_per_job")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give 1 or more")
    if kind == "serial":  # one job at a time, here: on the chosen GPUs (several: MirroredStrategy)
        if options.gpus is not None:
            from dlrun.execution.devices import check_gpus, parse_gpus, use_gpus_here

            use_gpus_here(check_gpus(parse_gpus(options.gpus)))
        return None
    if options.gpus is not None and kind != "local":
        raise UsageError(f"--gpus chooses this host's GPUs (serial and local executors); with --executor {kind} "
                         f"give --gpus-per-job and let {kind} place the jobs")
    if kind == "local":
        from dlrun.execution.devices import parse_gpus
        from dlrun.execution.local import LocalExecutor

        gpus = parse_gpus(options.gpus if options.gpus is not None else _gpu_text(profile.get("gpus")))
        return LocalExecutor(workers, gpus, 1 if gpus_per_job is None else gpus_per_job)
    shared_ok = bool(profile.get("shared_filesystem"))
    if kind == "ray":
        from dlrun.execution.ray_tasks import RayExecutor, is_this_host

        address = options.ray_address or profile.get("address")
        executor = RayExecutor(address, workers, gpus_per_job or 0, int(profile.get("cpus_per_job") or 1))
        # A remote cluster is refused before connecting; one at this host, once its nodes are known.
        if not is_this_host(address) or (address is not None and executor.nodes() > 1):
            try:
                check_reachable(kind, output_root, tracking_uri, tuning=tuning, storage=storage, shared_ok=shared_ok)
            except UsageError:
                executor.close()
                raise
        return executor
    from dlrun.execution.slurm import SlurmExecutor

    if workers is not None:
        profile["array_parallelism"] = workers
    if gpus_per_job is not None:
        profile["gpus_per_job"] = gpus_per_job
    profile.pop("shared_filesystem", None)
    executor = SlurmExecutor(profile)
    if executor.multi_host:
        check_reachable(kind, output_root, tracking_uri, tuning=tuning, storage=storage, shared_ok=shared_ok)
    return executor


def _gpu_text(gpus) -> str | None:
    if gpus is None:
        return None
    return ",".join(str(g) for g in gpus) if isinstance(gpus, (list, tuple)) else str(gpus)


@contextmanager
def executor_for(options: ExecutorOptions | None, *, resume=None, **kwargs) -> Iterator[object]:
    """:func:`make_executor`, closed (workers ended, a Ray started for the run shut down) after
    use. A resumed run (``resume``, a ResumeTarget) is checked against the store it records."""
    if resume is not None and not kwargs.get("tracking_uri"):
        kwargs["tracking_uri"] = resume.status.get("tracking_uri")
    executor = make_executor(options, **kwargs) if options is not None else None
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()
