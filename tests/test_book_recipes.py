"""Every recipe in recipes/ validates from the command line, cites the book, and is run end
to end by some test (with its data swapped for small data where the book's cannot be had)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# The run-everything tests: each names the recipe files it runs.
THIS = Path(__file__).name


def test_every_recipe_validates_from_the_command_line():
    dlrun = Path(sys.executable).with_name("dlrun")
    result = subprocess.run([str(dlrun), "validate", *map(str, RECIPES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(RECIPES)
    # Data the book downloads (Jena, cats_and_dogs_small…) may be missing here: only a warning.
    for line in result.stderr.splitlines():
        assert line.startswith("warning: ") or not line.strip(), line


def test_every_recipe_cites_its_section_of_the_book():
    for path in RECIPES:
        if path.stem == "quickstart":
            continue
        header = path.read_text().split("\n\n", 1)[0]
        assert re.search(r"Deep Learning with Python, \d+\.\d+", header), f"{path.name}: no book section"


def test_every_recipe_is_run_end_to_end_by_a_test():
    tests = {p: p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != THIS}
    def named(recipe: Path, text: str) -> bool:  # as a file name, or as a quoted stem in a parametrize list
        return recipe.name in text or f'"{recipe.stem}"' in text or f"'{recipe.stem}'" in text

    unrun = [r.name for r in RECIPES if not any(named(r, text) for text in tests.values())]
    assert not unrun, f"recipes no test runs: {unrun}"
