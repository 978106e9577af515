"""The base of every recipe section: unknown keys are refused, and so are NaN and infinite
numbers (YAML's ``.nan``/``.inf``), which no recipe setting means."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)
