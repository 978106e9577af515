"""What a user sees while a run works: a bar inside each epoch on a terminal, a resume that starts
from the epoch reached, the command that resumes an interrupted run, one note where a picture
cannot be drawn. The CLI runs as a subprocess; a terminal is a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import DLRUN, ROOT, TINY, dlrun  # noqa: E402

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "220", "LINES": "40"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _interrupt_after_epoch(cwd: Path, recipe: Path, epoch: int) -> tuple[int, str]:
    """Train on a pipe (plain lines), Ctrl-C once epoch ``epoch`` is reported."""
    proc = subprocess.Popen([*DLRUN, "train", str(recipe), "--set", "fit.epochs=100000", "--set", "fit.batch_size=8"],
                            cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        for line in proc.stdout:
            if f"epoch {epoch}/" in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


def _on_a_terminal(args: list[str], cwd: Path, until, timeout: float = 180) -> str:
    """Run the CLI with a pseudo-terminal as stdout and stderr; Ctrl-C it once ``until(screen)``
    holds (the screen text without escape codes); return that text."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*DLRUN, *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=follower)
    os.close(follower)
    seen, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline and not until(_ESCAPES.sub("\n", seen.decode(errors="replace"))):
            if select.select([leader], [], [], 1)[0]:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
        proc.send_signal(signal.SIGINT)
        while True:  # the rest, until the process closes the terminal
            if not select.select([leader], [], [], 60)[0]:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=120)
    finally:
        proc.kill()
        os.close(leader)
    return _ESCAPES.sub("\n", seen.decode(errors="replace"))


def _batch_bars(screen: str) -> list[tuple[int, int, int]]:
    """(epoch, batches done, batches) of every batch bar drawn."""
    return [tuple(map(int, m)) for m in re.findall(r"epoch (\d+)\D*?(\d+)/(\d+)\s+batches", screen)]


def test_a_terminal_shows_batches_inside_epochs_and_a_resume_starts_at_the_epoch_reached(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    code, err = _interrupt_after_epoch(tmp_path, recipe, 2)
    assert code == 130, err
    (run_dir,) = (tmp_path / "artifacts" / "runs" / "tiny_cli").glob("*")
    assert f"resume it with: dlrun train --resume {run_dir}" in err  # the command, ready to paste
    done = len((run_dir / "history.csv").read_text().splitlines()) - 1

    def mid_epoch(screen: str) -> bool:  # a batch bar of an epoch after the resume, part-way through
        return any(epoch > done + 1 and 0 < k < n for epoch, k, n in _batch_bars(screen))

    screen = _on_a_terminal(["train", "--resume", str(run_dir)], tmp_path, mid_epoch)
    assert mid_epoch(screen), screen[-3000:]
    first = re.search(r"holdout\D*?(\d+)/100000\s+epochs", screen)
    assert first and int(first.group(1)) == done, screen[:3000]  # not 0 after a resume
    assert re.search(r"\d+/\d+\s+batches(?:(?!holdout|epochs).)*?loss=[\d.]+", screen, re.S)  # the running loss
    assert "resume it with: dlrun train --resume" in screen


def test_the_missing_pydot_note_is_said_once_per_process(tmp_path):
    from dlrun.model.plot import missing

    if missing() is None:
        pytest.skip("pydot and graphviz are installed here: the model picture is drawn")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    result = dlrun("kfold", str(recipe), "--k", "2", "--refit", "--set", "fit.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model picture (model.png) skipped") == 1, result.stdout
    summary = json.loads((next((tmp_path / "artifacts" / "runs" / "tiny_cli").glob("*/run.json"))).read_text())
    assert summary["status"] == "FINISHED"
