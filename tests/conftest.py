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
