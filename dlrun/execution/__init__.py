"""Where jobs run: executors take job specs (:class:`dlrun.training.jobspec.JobSpec`) and hand
back how each ended; the results stay in the jobs' directories.

- ``serial``: in this process, one after another (the default; :mod:`dlrun.training.kfold_jobs`).
- ``local``: N worker processes on this host (:mod:`.local`), devices dealt out per worker.
- ``ray``: Ray core tasks on a Ray cluster or a local Ray started for the run (:mod:`.ray_tasks`).
- ``slurm``: submitit job arrays (:mod:`.slurm`).

An executor has ``name`` and ``workers``, ``describe()`` (what the run records of it),
``start()`` (workers or a connection made early, while the parent prepares the run),
``run(specs, in_process, reporter)`` → one ``JobOutcome`` per spec (a failed job is an outcome,
not an exception; an interrupt is forwarded to the jobs, then raised) and ``close()``.

``make_executor`` (:mod:`.options`) turns the command-line options into one, refusing before
anything starts a configuration whose workers could not reach the run's files or store.
Nothing here is imported by ``dlrun --help``; Ray and submitit are imported only when used.
"""
