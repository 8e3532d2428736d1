"""Snapshots: create, list, show, delete (carried out by the source's volume service)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["snapshots"])
