"""Per-project default volume types (3.62)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["default_types"])
