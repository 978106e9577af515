"""Can workers on other hosts reach the run? Checked before anything starts.

A job on another host reads its spec and writes its results under the output root, and
writes its metrics to the tracking store (and a tuning worker to the study's storage). So
when jobs may run on other hosts (Slurm; a Ray cluster with more than this node) the output
root must be on a shared filesystem, and the stores must be servers other hosts can reach:
not a SQLite file or a local ``file:`` store, not ``localhost``. A local Ray started for the
run, or submitit's ``local``/``debug`` clusters, are this host: everything is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from dlrun.errors import UsageError

# Filesystems whose files every host of a cluster sees.
SHARED_FILESYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs",
                      "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "fuse.juicefs", "panfs",
                      "wekafs", "afs", "fuse.gcsfuse", "fuse.s3fs", "orangefs", "pvfs2", "virtiofs", "9p"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem ``path`` (or its nearest existing folder) is on (``/proc/mounts``)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    best, kind = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, parts[2]
    except OSError:
        return None
    return kind


def unreachable_store(uri: str | None, what: str, flag: str) -> str | None:
    """Why other hosts could not use the store at ``uri`` (None: they can)."""
    if not uri:
        return (f"the {what} defaults to a SQLite file under the output root, which only this host can write "
                f"safely; pass {flag} with a server other hosts reach")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or scheme.startswith("sqlite"):
        return f"the {what} {uri} is a file on this host's disk; pass {flag} with a server other hosts reach"
    if scheme not in ("databricks", "databricks-uc", "uc") and (parts.hostname or "") in LOCAL_HOSTS:
        return f"the {what} {uri} names this host as localhost, which on another host is that host; use its name"
    return None


def check_reachable(executor: str, output_root: Path, tracking_uri: str | None, *, tuning: bool = False,
                    storage: str | None = None, shared_ok: bool = False) -> None:
    """Refuse (UsageError, exit 2) a multi-host executor whose workers could not reach the run
    (``tuning``: also the study's ``storage``)."""
    problems = []
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None
    why = unreachable_store(uri, "MLflow tracking store", "--tracking-uri (mlflow server --host 0.0.0.0 …)")
    if why:
        problems.append(why)
    if tuning:
        why = unreachable_store(storage, "tuning study's storage", "--storage (an RDB URL: postgresql://, mysql://)")
        if why:
            problems.append(why)
    kind = filesystem_type(output_root)
    if not shared_ok and kind not in SHARED_FILESYSTEMS:
        problems.append(f"the output root {Path(output_root).absolute()} is on a local filesystem ({kind or 'unknown'}"
                        f"), which other hosts do not see; pass --output-root on a shared filesystem (NFS, Lustre, "
                        f"GPFS…), or set 'shared_filesystem: true' in the executor profile if it is shared")
    if problems:
        raise UsageError(f"--executor {executor}: jobs may run on other hosts, which could not reach this run: "
                         + "; ".join(problems) + ". Nothing was started")
