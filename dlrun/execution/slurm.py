"""``--executor slurm``: the jobs as one Slurm job array, submitted with submitit.

Partition, time, GPUs, cores, memory and how many array tasks run at once come from an
executor profile (``configs/executors/slurm.yaml``; ``--workers`` and ``--gpus-per-job``
override it). Each array task runs one job spec in its own process on a node (Slurm sets
``CUDA_VISIBLE_DEVICES``); results land in the job directories on the shared filesystem, and
submitit's logs in ``<output-root>/slurm/<job id>/``. ``cluster: local`` (submitit's local
executor: processes on this host) and ``cluster: debug`` (in this process) run without Slurm.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from dlrun.errors import UsageError
from dlrun.report import Reporter
from dlrun.training.jobspec import JobOutcome, JobSpec

# Profile keys → submitit's parameters (generic ones, or Slurm's own with their slurm_ prefix).
PROFILE_PARAMETERS = {
    "partition": "slurm_partition", "time": "timeout_min", "gpus_per_job": "gpus_per_node",
    "cpus_per_job": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism",
    "account": "slurm_account", "qos": "slurm_qos", "constraint": "slurm_constraint", "setup": "slurm_setup",
    "additional": "slurm_additional_parameters", "job_name": "name",
}
CLUSTERS = ("slurm", "local", "debug")


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit, which is not installed here: "
                         "pip install 'dlrun[slurm]'") from None
    return submitit


class SlurmExecutor:
    name = "slurm"

    def __init__(self, profile: dict):
        self.profile = dict(profile)
        self.cluster = self.profile.pop("cluster", "slurm")
        if self.cluster not in CLUSTERS:
            raise UsageError(f"executor profile: cluster '{self.cluster}' is not one of {', '.join(CLUSTERS)}")
        self.submitit = import_submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UsageError("--executor slurm: there is no sbatch here; run dlrun on a Slurm login node, or set "
                             "'cluster: local' in the executor profile to try it on this host")
        self.workers = self.profile.get("array_parallelism")

    @property
    def multi_host(self) -> bool:
        return self.cluster == "slurm"

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers or "as Slurm schedules", "cluster": self.cluster,
                **{k: v for k, v in self.profile.items() if k in PROFILE_PARAMETERS}}

    def start(self) -> "SlurmExecutor":
        return self  # nothing to start before the jobs are submitted

    def close(self) -> None:
        pass

    def _executor(self, folder: Path):
        executor = self.submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        params = {PROFILE_PARAMETERS[k]: v for k, v in self.profile.items()
                  if k in PROFILE_PARAMETERS and v is not None}
        params.setdefault("timeout_min", 60)  # submitit's local default is 2 minutes
        params.setdefault("name", "dlrun")
        if self.cluster != "slurm":  # submitit's other executors take only their own parameters
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        executor.update_parameters(**params)
        return executor

    def run(self, specs: list[JobSpec], in_process=None, reporter: Reporter | None = None) -> list[JobOutcome]:
        from dlrun.execution.worker import run_submitted

        reporter = reporter or Reporter()
        for spec in specs:
            spec.devices = {"gpus": None, "cpu_threads": self.profile.get("cpus_per_job")}  # Slurm sets the GPUs
            spec.write()
        folder = Path(specs[0].output_root) / "slurm"
        jobs = self._executor(folder).map_array(run_submitted, [str(spec.path) for spec in specs])
        try:
            (folder / "%j").rmdir()  # submitit makes the folder template itself; each job has its own
        except OSError:
            pass
        reporter.note(f"submitted {len(jobs)} job(s) to {self.cluster}: "
                      f"{', '.join(f'{s.name}={j.job_id}' for s, j in zip(specs, jobs))}")
        try:
            while not all(job.done() for job in jobs):
                time.sleep(2.0 if self.cluster == "slurm" else 0.5)
        except KeyboardInterrupt:
            reporter.note(f"cancelling {sum(not j.done() for j in jobs)} Slurm job(s) (their checkpoints are kept)")
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            raise
        return [self._outcome(spec, job) for spec, job in zip(specs, jobs)]

    @staticmethod
    def _outcome(spec: JobSpec, job) -> JobOutcome:
        try:
            job.result()
        except KeyboardInterrupt:
            return JobOutcome(spec.name, spec.job_dir, "KILLED", f"Slurm job {job.job_id} interrupted")
        except Exception as exc:  # noqa: BLE001 - the job failed or its node lost it
            lines = [line for line in str(exc).splitlines() if line.strip()]
            return JobOutcome(spec.name, spec.job_dir, "FAILED",
                              f"Slurm job {job.job_id} ({job.state}): {lines[-1] if lines else type(exc).__name__}")
        return JobOutcome(spec.name, spec.job_dir, "FINISHED")
