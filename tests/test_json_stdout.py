"""Under --json, stdout holds the JSON object alone, whatever else writes to it: a plugin that
prints when imported and while training, through Python's print and straight into file
descriptor 1 as C libraries do. Their text goes to stderr, where progress goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHATTY_PLUGIN = """\
import os

import keras

print("chatty plugin: imported")
os.write(1, b"chatty plugin: imported, said on fd 1\\n")


class Chatty(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(f"chatty plugin: epoch {epoch + 1} done")
        os.write(1, b"chatty plugin: a C library's line\\n")
"""


@pytest.mark.slow  # two dlrun subprocesses
def test_json_stdout_is_one_object_while_a_plugin_prints(tmp_path):
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "chatty_plugin.py").write_text(CHATTY_PLUGIN)
    recipe = iris_recipe("iris_chatty", epochs=2, extra="")
    recipe = recipe.replace("name: iris_chatty\n", "name: iris_chatty\nplugins: [chatty_plugin]\n")
    recipe = recipe.replace("  batch_size: 16\n", "  batch_size: 16\n  callbacks: [Chatty]\n")
    (tmp_path / "recipe.yaml").write_text(recipe)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path / "plugin")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "dlrun", "train", "recipe.yaml", "-o", "out", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout  # one line…
    summary = json.loads(result.stdout)  # …that is the JSON object
    assert summary["status"] == "FINISHED" and Path(summary["run_dir"]).is_dir()
    for said in ("chatty plugin: imported", "chatty plugin: imported, said on fd 1", "chatty plugin: epoch 2 done",
                 "chatty plugin: a C library's line"):
        assert said in result.stderr, said

    failed = subprocess.run([sys.executable, "-m", "dlrun", "train", "recipe.yaml", "-o", "out", "--json",
                             "--tracking-uri", "nosuchscheme://x"],  # refused after the plugin printed
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert failed.returncode == 2, failed.stderr
    assert "chatty plugin: imported" in failed.stderr
    assert json.loads(failed.stdout)["exit_code"] == 2 and failed.stdout.count("\n") == 1  # errors too
