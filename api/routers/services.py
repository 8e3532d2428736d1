"""os-services and a volume service's capabilities (admin)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["services"])
