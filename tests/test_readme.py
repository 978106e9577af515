"""The README's examples are the real files: a recipe shown as a file must be that file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_recipe_files_shown_in_the_readme_match_the_files():
    shown = [b for b in _blocks((ROOT / "README.md").read_text(encoding="utf-8")) if b.startswith("# recipes/")]
    assert shown, "the README shows no recipe file"
    for block in shown:
        path = ROOT / block.split()[1]
        assert yaml.safe_load(block) == yaml.safe_load(path.read_text(encoding="utf-8")), (
            f"the README's {path.name} differs from the file: update one of them")
