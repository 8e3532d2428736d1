"""A volume's metadata, and updating its name and description."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["volume_metadata"])
