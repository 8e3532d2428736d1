"""The file driver: each volume and snapshot is a sparse file under one directory.

Layout: PATH/volumes/volume-<id> and PATH/snapshots/snapshot-<id>; provider_location is the
file's absolute path. Ids must be UUIDs, so no id can name a path outside PATH.

- An empty volume is a sparse file set to its size with ftruncate; no zeros are written.
- A copy (snapshot, volume from snapshot, clone, volume from a raw image file) reads only the
  source's data regions (SEEK_DATA/SEEK_HOLE; where unsupported, the whole file) and skips
  all-zero blocks, so holes stay holes. It is written to a temporary file in the target's
  directory, grown to the requested size, synced, and renamed onto the final name: a crash
  never leaves a partial volume under that name, and a repeat simply redoes the copy.
  A requested size below the source's size is refused; the copy is never shrunk.
- Capacity: total is `capacity_gb` or the filesystem's size; allocated is the apparent size
  of every volume and snapshot (thin provisioning), so free may reach 0 before the disk does.

Every OSError leaves as a DriverError with the cause chained. Leftover temporary files of a
crashed copy (.volume-<id>.*.tmp) are not counted and are not cleaned up here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator

from drivers.base import Capacity, DriverError, VolumeDriver

GiB = 1024 ** 3
BLOCK = 1024 * 1024  # copy unit; an all-zero block of a data region is skipped, not written
_ZEROS = bytes(BLOCK)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@contextlib.contextmanager
def _fs(action: str) -> Iterator[None]:
    """Turn an OSError raised inside into a DriverError naming `action`."""
    try:
        yield
    except OSError as exc:
        raise DriverError(f"{action}: {exc.strerror or exc}") from exc


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise DriverError(f"invalid {kind} id {value!r}: not a UUID")
    return value


def _check_size(size_gb: int) -> int:
    if isinstance(size_gb, bool) or not isinstance(size_gb, int) or size_gb < 1:
        raise DriverError(f"invalid size {size_gb!r}: a positive whole number of GiB is required")
    return size_gb


def _data_regions(fd: int, length: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data region of `fd`; the whole file where SEEK_DATA is unsupported."""
    try:
        start = os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data at all
            return
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        yield 0, length
        return
    while start < length:
        end = min(os.lseek(fd, start, os.SEEK_HOLE), length)
        yield start, end
        try:
            start = os.lseek(fd, end, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise


def _copy_sparse(src: int, dst: int, length: int) -> None:
    """Write the data of `src`'s first `length` bytes into the empty `dst` at the same offsets,
    skipping holes and all-zero blocks; the caller then sets `dst`'s size."""
    for start, end in _data_regions(src, length):
        offset = start
        while offset < end:
            chunk = os.pread(src, min(BLOCK, end - offset), offset)
            if not chunk:
                return  # the source shrank under us
            if chunk != _ZEROS[:len(chunk)]:
                os.pwrite(dst, chunk, offset)
            offset += len(chunk)


class FileDriver(VolumeDriver):
    """Volumes as sparse files under `path`; `capacity_gb` caps the reported total."""

    name = "file"
    storage_protocol = "file"

    def __init__(self, backend_name: str, path: str, capacity_gb: int | None = None) -> None:
        super().__init__(backend_name)
        if capacity_gb is not None and (isinstance(capacity_gb, bool) or not isinstance(capacity_gb, int)
                                        or capacity_gb < 0):
            raise DriverError(f"invalid capacity_gb {capacity_gb!r}: a whole number of GiB >= 0 is required")
        self.path = os.path.abspath(path)
        self.capacity_gb = capacity_gb
        self.volumes_dir = os.path.join(self.path, "volumes")
        self.snapshots_dir = os.path.join(self.path, "snapshots")
        with _fs(f"cannot prepare {self.path}"):
            os.makedirs(self.volumes_dir, exist_ok=True)
            os.makedirs(self.snapshots_dir, exist_ok=True)

    # -- paths --------------------------------------------------------------------------------

    def volume_path(self, volume_id: str) -> str:
        return os.path.join(self.volumes_dir, f"volume-{_check_id('volume', volume_id)}")

    def snapshot_path(self, snapshot_id: str) -> str:
        return os.path.join(self.snapshots_dir, f"snapshot-{_check_id('snapshot', snapshot_id)}")

    # -- volumes ------------------------------------------------------------------------------

    def create_volume(self, volume_id: str, size_gb: int) -> str:
        target, size = self.volume_path(volume_id), _check_size(size_gb) * GiB
        with _fs(f"cannot create volume {volume_id}"):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                current = os.fstat(fd).st_size
                if current > size:
                    raise DriverError(f"volume {volume_id} already exists with {current} bytes, "
                                      f"more than {size_gb} GiB")
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        return target

    def create_volume_from_snapshot(self, volume_id: str, snapshot_id: str, size_gb: int) -> str:
        return self._copy(self.snapshot_path(snapshot_id), f"snapshot {snapshot_id}",
                          self.volume_path(volume_id), size_gb)

    def create_cloned_volume(self, volume_id: str, source_volume_id: str, size_gb: int) -> str:
        return self._copy(self.volume_path(source_volume_id), f"source volume {source_volume_id}",
                          self.volume_path(volume_id), size_gb)

    def create_volume_from_image(self, volume_id: str, image_path: str, size_gb: int) -> str:
        """The image file is taken as raw bytes (no format conversion)."""
        return self._copy(os.path.abspath(image_path), f"image file {image_path}",
                          self.volume_path(volume_id), size_gb)

    def delete_volume(self, volume_id: str) -> None:
        self._unlink(self.volume_path(volume_id), f"volume {volume_id}")

    def extend_volume(self, volume_id: str, new_size_gb: int) -> None:
        target, size = self.volume_path(volume_id), _check_size(new_size_gb) * GiB
        with _fs(f"cannot extend volume {volume_id}"):
            try:
                current = os.stat(target).st_size
            except FileNotFoundError:
                raise DriverError(f"cannot extend volume {volume_id}: it does not exist") from None
            if size < current:
                raise DriverError(f"cannot extend volume {volume_id} to {new_size_gb} GiB: "
                                  f"it already holds {current} bytes (shrinking is refused)")
            os.truncate(target, size)

    # -- snapshots ----------------------------------------------------------------------------

    def create_snapshot(self, snapshot_id: str, volume_id: str) -> str:
        return self._copy(self.volume_path(volume_id), f"volume {volume_id}",
                          self.snapshot_path(snapshot_id), None)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._unlink(self.snapshot_path(snapshot_id), f"snapshot {snapshot_id}")

    # -- capacity -----------------------------------------------------------------------------

    def capacity(self) -> Capacity:
        with _fs(f"cannot measure {self.path}"):
            if self.capacity_gb is not None:
                total = self.capacity_gb
            else:
                fs = os.statvfs(self.path)
                total = fs.f_blocks * fs.f_frsize // GiB
            apparent = self._apparent_bytes(self.volumes_dir, "volume-") \
                + self._apparent_bytes(self.snapshots_dir, "snapshot-")
        allocated = -(-apparent // GiB)
        return Capacity(total_gb=total, free_gb=max(total - allocated, 0), allocated_gb=allocated)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _apparent_bytes(directory: str, prefix: str) -> int:
        total = 0
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.startswith(prefix):
                    continue  # temporary files of copies in progress
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass  # deleted while we looked
        return total

    @staticmethod
    def _unlink(target: str, what: str) -> None:
        with _fs(f"cannot delete {what}"):
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass

    @staticmethod
    def _copy(source: str, what: str, target: str, size_gb: int | None) -> str:
        """Copy `source` sparsely to `target` through a renamed temporary file, grown to `size_gb`
        (None: the source's size). Returns `target`."""
        if size_gb is not None:
            _check_size(size_gb)
        with _fs(f"cannot copy {what} to {os.path.basename(target)}"):
            try:
                src = os.open(source, os.O_RDONLY)
            except FileNotFoundError:
                raise DriverError(f"{what} does not exist") from None
            try:
                st = os.fstat(src)
                if not stat.S_ISREG(st.st_mode):
                    raise DriverError(f"{what} is not a regular file")
                size = st.st_size if size_gb is None else size_gb * GiB
                if size < st.st_size:
                    raise DriverError(f"cannot create {size_gb} GiB from {what}: "
                                      f"it holds {st.st_size} bytes (shrinking is refused)")
                directory, name = os.path.split(target)
                dst, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
                try:
                    try:
                        _copy_sparse(src, dst, st.st_size)
                        os.ftruncate(dst, size)  # holes up to the requested size
                        os.fsync(dst)  # the data is on disk before the name is
                    finally:
                        os.close(dst)
                    os.replace(tmp, target)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            finally:
                os.close(src)
        return target
