"""User messages: why an asynchronous operation failed."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["messages"])
