"""Volume drivers by name: `load("file", backend_name, path=...)` builds the configured one.

Re-exports the interface (`VolumeDriver`, `DriverError`, `Capacity`) so callers import from
`drivers` alone.
"""

from __future__ import annotations

from typing import Any

from drivers.base import Capacity, DriverError, VolumeDriver
from drivers.file import FileDriver

DRIVERS: dict[str, type[VolumeDriver]] = {"file": FileDriver}

__all__ = ["DRIVERS", "Capacity", "DriverError", "FileDriver", "VolumeDriver", "load"]


def load(name: str, backend_name: str, **options: Any) -> VolumeDriver:
    """The driver registered as `name`, built with its options; ValueError for an unknown name."""
    try:
        cls = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown volume driver {name!r}; known: {', '.join(sorted(DRIVERS))}") from None
    return cls(backend_name, **options)
