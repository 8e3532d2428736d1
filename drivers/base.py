"""The volume driver interface: what a volume service asks of a storage backend.

A driver owns the bytes of volumes and snapshots on one backend (`backend_name`, Cinder's
`volume_backend_name`). Every create returns a `provider_location`, the backend's own name for
the result, which the volume service stores on the row. Creates may be redelivered: a repeat
leaves the same result; deletes of something already gone succeed. Any backend failure is a
`DriverError` whose text is a short reason fit for logs; argument errors are DriverErrors too,
so a caller has exactly one exception to handle.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any


class DriverError(Exception):
    """A backend operation failed; str(exc) is a short reason fit for logs."""


@dataclass(frozen=True)
class Capacity:
    """Backend capacity in whole GiB; `allocated_gb` is the provisioned (apparent) size of
    volumes and snapshots, so with thin provisioning it may exceed what is really used."""

    total_gb: int
    free_gb: int
    allocated_gb: int


class VolumeDriver(abc.ABC):
    """One storage backend. Sizes are whole GiB; ids are the volume and snapshot row ids."""

    name: str                   # the key in drivers.DRIVERS
    storage_protocol: str       # Cinder's storage_protocol stat
    driver_version = "1.0"
    vendor_name = "volchain"

    def __init__(self, backend_name: str, **options: Any) -> None:
        self.backend_name = backend_name

    @abc.abstractmethod
    def create_volume(self, volume_id: str, size_gb: int) -> str:
        """Create an empty volume of `size_gb`; return its provider_location."""

    @abc.abstractmethod
    def create_volume_from_snapshot(self, volume_id: str, snapshot_id: str, size_gb: int) -> str:
        """Create a volume holding the snapshot's data, grown to `size_gb` (never smaller than it)."""

    @abc.abstractmethod
    def create_cloned_volume(self, volume_id: str, source_volume_id: str, size_gb: int) -> str:
        """Create a volume holding the source volume's data, grown to `size_gb` (never smaller)."""

    @abc.abstractmethod
    def create_volume_from_image(self, volume_id: str, image_path: str, size_gb: int) -> str:
        """Create a volume holding a raw image file's bytes, grown to `size_gb` (never smaller)."""

    @abc.abstractmethod
    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume; a volume that does not exist is not an error."""

    @abc.abstractmethod
    def create_snapshot(self, snapshot_id: str, volume_id: str) -> str:
        """Take a point-in-time copy of a volume; return its provider_location."""

    @abc.abstractmethod
    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot; a snapshot that does not exist is not an error."""

    @abc.abstractmethod
    def extend_volume(self, volume_id: str, new_size_gb: int) -> None:
        """Grow a volume to `new_size_gb`; its data is kept. Shrinking is refused."""

    @abc.abstractmethod
    def capacity(self) -> Capacity:
        """The backend's total, free and allocated GiB now."""

    def capabilities(self) -> dict[str, Any]:
        """Cinder-shaped stats for the service heartbeat: the backend as one pool."""
        cap = self.capacity()
        sizes = {"total_capacity_gb": cap.total_gb, "free_capacity_gb": cap.free_gb,
                 "allocated_capacity_gb": cap.allocated_gb}
        return {
            "volume_backend_name": self.backend_name,
            "vendor_name": self.vendor_name,
            "driver_version": self.driver_version,
            "storage_protocol": self.storage_protocol,
            **sizes,
            "thin_provisioning_support": True,
            "pools": [{"pool_name": self.backend_name, **sizes}],
        }
