"""What the user allowed a recipe on the command line, beyond what any recipe may do.

A recipe reads files under its own folder only, and no callback of it reaches the network. The
user widens that for one command (``--allow-read DIR``, ``--allow-network``); the command runs
inside :func:`granted`, and every check below it — loading the recipe (reads), the preflight
and the callbacks (network) — asks :func:`current`. Nothing threads the flags through the
runner, the tuner and the resume path: they load and run inside the scope.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Grants:
    network: bool = False  # callbacks that send data over the network (RemoteMonitor)
    read: tuple[Path, ...] = ()  # folders (or files) a recipe may read outside its own folder


_current: ContextVar[Grants] = ContextVar("dlrun_grants", default=Grants())


def current() -> Grants:
    return _current.get()


@contextmanager
def granted(*, network: bool = False, read: Iterable[str | Path] = ()) -> Iterator[Grants]:
    """Allow more for the commands run inside (``read`` adds to what an outer scope allowed)."""
    outer = current()
    grants = Grants(network=network or outer.network,
                    read=outer.read + tuple(Path(p).expanduser().absolute() for p in read))
    token = _current.set(grants)
    try:
        yield grants
    finally:
        _current.reset(token)


# Keras callbacks that send a run's data over the network, and what they send where.
NETWORK_CALLBACKS = {"RemoteMonitor": "posts every epoch's logs to the URL in its 'root' argument"}


def network_problem(name: str) -> str | None:
    """Why the callback ``name`` needs ``--allow-network``, when it does and it was not given."""
    if name not in NETWORK_CALLBACKS or current().network:
        return None
    return (f"{name} {NETWORK_CALLBACKS[name]}: a recipe reaches the network only when you allow it — run "
            f"with --allow-network")
