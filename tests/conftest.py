"""Shared fixtures: the offline book data beside the checkout, tiny generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = Path(os.environ.get("DLRUN_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))

# Keep TensorFlow's start-up quiet in test output, and never let Keras reach the network.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"offline book datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture
def recipes_dir() -> Path:
    return ROOT / "recipes"


# Tests measured as slow on 2 cores (tests/make_tiers.py writes the list): `pytest -m "not slow"` is the quick tier.
SLOW_LIST = Path(__file__).with_name("slow_tests.txt")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DLRUN_NO_SLOW_LIST") or not SLOW_LIST.exists():
        return
    listed = {line.strip() for line in SLOW_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")}
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its fuzz counts to the controller (pytest_testnodedown)."""
    counts = session.config.__dict__.get("dlrun_fuzz_counts")
    if counts and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["dlrun_fuzz_counts"] = counts


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    counts = getattr(node, "workeroutput", {}).get("dlrun_fuzz_counts")
    if counts:
        node.config.__dict__.setdefault("dlrun_fuzz_counts", {}).update(counts)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The recipe fuzz test's count of inputs, shown even without -s (tests/test_recipe_fuzz.py)."""
    counts = config.__dict__.get("dlrun_fuzz_counts")
    if counts:
        valid, errors = (sum(c[i] for c in counts.values()) for i in (0, 1))
        detail = ", ".join(f"{name.removeprefix('test_')} {sum(c)}" for name, c in counts.items())
        terminalreporter.write_line(f"recipe fuzz: {valid + errors} inputs fuzzed ({detail}): {valid} valid "
                                    f"recipes, {errors} located recipe errors, nothing else")
