"""`dlrun --help`, `dlrun validate` and `dlrun show --no-model` never import TensorFlow, Keras or MLflow."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import sys
from typer.testing import CliRunner
from dlrun.cli import app
import dlrun  # the notebook API stays light too
runner = CliRunner()
for args in (["--help"], ["validate", *sys.argv[1:]], ["show", "--no-model", sys.argv[1]], ["train", "--help"]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
heavy = [m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def test_light_commands_import_no_heavy_library():
    recipes = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    out = subprocess.run([sys.executable, "-c", PROBE, *recipes], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout, out.stdout
