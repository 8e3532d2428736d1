"""What clients probe: extensions and resource filters."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["discovery"])
