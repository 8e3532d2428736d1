"""The file driver on a temporary directory: sparse files, sparse atomic copies, capacity.

No servers: these tests request none of conftest's fixtures. "Sparse" is checked as the
disk blocks a file really holds (st_blocks * 512) against its apparent size (st_size).
"""

from __future__ import annotations

import errno
import os
import uuid

import pytest

import drivers
from drivers import DriverError, FileDriver
from drivers import file as file_driver

GiB = 1024 ** 3
MiB = 1024 ** 2
MARK = b"volchain-mark"


def new_id() -> str:
    return str(uuid.uuid4())


def used_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512


def read_at(path: str, offset: int, length: int = len(MARK)) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_at(path: str, offset: int, data: bytes = MARK) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def leftovers(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(".")]


@pytest.fixture
def driver(tmp_path) -> FileDriver:
    return FileDriver("backend-a", path=str(tmp_path / "store"))


# -- create and delete -----------------------------------------------------------------------------

def test_new_volume_is_a_sparse_file_of_exactly_its_size(driver, tmp_path):
    vid = new_id()
    location = driver.create_volume(vid, 2)
    assert location == str(tmp_path / "store" / "volumes" / f"volume-{vid}")
    assert os.path.isabs(location)
    assert os.stat(location).st_size == 2 * GiB
    assert used_bytes(location) < MiB


def test_creating_a_volume_twice_leaves_one_file_of_that_size_with_its_data(driver):
    vid = new_id()
    location = driver.create_volume(vid, 1)
    write_at(location, 5 * MiB)
    assert driver.create_volume(vid, 1) == location
    assert os.listdir(driver.volumes_dir) == [f"volume-{vid}"]
    assert os.stat(location).st_size == GiB
    assert read_at(location, 5 * MiB) == MARK


def test_deleting_is_idempotent_and_a_missing_volume_or_snapshot_is_not_an_error(driver):
    vid, sid = new_id(), new_id()
    location = driver.create_volume(vid, 1)
    snap = driver.create_snapshot(sid, vid)
    driver.delete_snapshot(sid)
    driver.delete_volume(vid)
    assert not os.path.exists(location) and not os.path.exists(snap)
    driver.delete_volume(vid)
    driver.delete_snapshot(sid)
    driver.delete_volume(new_id())


# -- copies ----------------------------------------------------------------------------------------

def test_snapshot_and_volume_from_it_keep_the_data_and_stay_sparse(driver):
    vid, sid, copy_id = new_id(), new_id(), new_id()
    source = driver.create_volume(vid, 2)
    write_at(source, 5 * MiB)
    write_at(source, GiB + 3, b"second")

    snap = driver.create_snapshot(sid, vid)
    assert snap == os.path.join(driver.snapshots_dir, f"snapshot-{sid}")
    write_at(source, 5 * MiB, b"CHANGED")  # after the snapshot: must not reach it
    assert os.stat(snap).st_size == 2 * GiB
    assert read_at(snap, 5 * MiB) == MARK
    assert read_at(snap, GiB + 3, 6) == b"second"
    assert used_bytes(snap) < 16 * MiB

    copy = driver.create_volume_from_snapshot(copy_id, sid, 3)
    assert os.stat(copy).st_size == 3 * GiB
    assert read_at(copy, 5 * MiB) == MARK
    assert read_at(copy, GiB + 3, 6) == b"second"
    assert read_at(copy, 0, MiB) == bytes(MiB)
    assert used_bytes(copy) < 16 * MiB
    assert leftovers(driver.volumes_dir) == leftovers(driver.snapshots_dir) == []


def test_clone_is_grown_to_the_larger_requested_size_and_keeps_the_data(driver):
    src_id, clone_id = new_id(), new_id()
    source = driver.create_volume(src_id, 1)
    write_at(source, 5 * MiB)
    clone = driver.create_cloned_volume(clone_id, src_id, 4)
    assert os.stat(clone).st_size == 4 * GiB
    assert os.stat(source).st_size == GiB
    assert read_at(clone, 5 * MiB) == MARK
    assert used_bytes(clone) < 16 * MiB


def test_repeating_a_copy_redoes_it_from_the_current_source(driver):
    src_id, clone_id = new_id(), new_id()
    source = driver.create_volume(src_id, 1)
    driver.create_cloned_volume(clone_id, src_id, 1)
    write_at(source, 5 * MiB)
    clone = driver.create_cloned_volume(clone_id, src_id, 1)
    assert read_at(clone, 5 * MiB) == MARK
    assert os.listdir(driver.volumes_dir).count(f"volume-{clone_id}") == 1
    assert leftovers(driver.volumes_dir) == []


def test_volume_from_an_image_file_holds_its_bytes_and_is_grown(driver, tmp_path):
    image = tmp_path / "cirros.raw"
    payload = os.urandom(3 * MiB + 17)
    image.write_bytes(payload)
    location = driver.create_volume_from_image(new_id(), str(image), 1)
    assert os.stat(location).st_size == GiB
    assert read_at(location, 0, len(payload)) == payload
    assert read_at(location, len(payload), MiB) == bytes(MiB)
    assert used_bytes(location) < 16 * MiB


def test_a_copy_smaller_than_its_source_is_refused_and_leaves_nothing(driver):
    src_id, clone_id = new_id(), new_id()
    driver.create_volume(src_id, 2)
    with pytest.raises(DriverError, match="shrinking is refused"):
        driver.create_cloned_volume(clone_id, src_id, 1)
    assert os.listdir(driver.volumes_dir) == [f"volume-{src_id}"]


@pytest.mark.parametrize("create", [
    lambda d, tmp: d.create_volume_from_snapshot(new_id(), new_id(), 1),
    lambda d, tmp: d.create_cloned_volume(new_id(), new_id(), 1),
    lambda d, tmp: d.create_volume_from_image(new_id(), str(tmp / "no-such-image.raw"), 1),
    lambda d, tmp: d.create_snapshot(new_id(), new_id()),
], ids=["from-snapshot", "clone", "from-image", "snapshot"])
def test_a_missing_source_is_a_driver_error_and_creates_nothing(driver, tmp_path, create):
    with pytest.raises(DriverError, match="does not exist"):
        create(driver, tmp_path)
    assert os.listdir(driver.volumes_dir) == os.listdir(driver.snapshots_dir) == []


def test_a_copy_that_fails_midway_leaves_no_file_under_the_final_name(driver, monkeypatch):
    src_id, clone_id = new_id(), new_id()
    write_at(driver.create_volume(src_id, 1), 5 * MiB)
    real_copy = file_driver._copy_sparse

    def copy_then_fail(src: int, dst: int, length: int) -> None:
        real_copy(src, dst, length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(file_driver, "_copy_sparse", copy_then_fail)
    with pytest.raises(DriverError, match="No space left") as failed:
        driver.create_cloned_volume(clone_id, src_id, 1)
    assert isinstance(failed.value.__cause__, OSError)
    assert os.listdir(driver.volumes_dir) == [f"volume-{src_id}"]

    monkeypatch.setattr(file_driver, "_copy_sparse", real_copy)
    assert read_at(driver.create_cloned_volume(clone_id, src_id, 1), 5 * MiB) == MARK


def test_without_seek_data_a_copy_still_skips_zero_blocks(driver, monkeypatch):
    vid, sid = new_id(), new_id()
    write_at(driver.create_volume(vid, 1), 5 * MiB)
    real_lseek = os.lseek

    def lseek(fd: int, pos: int, how: int) -> int:
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "unsupported")
        return real_lseek(fd, pos, how)

    monkeypatch.setattr(file_driver.os, "lseek", lseek)
    snap = driver.create_snapshot(sid, vid)
    assert read_at(snap, 5 * MiB) == MARK
    assert os.stat(snap).st_size == GiB
    assert used_bytes(snap) < 16 * MiB


# -- extend ----------------------------------------------------------------------------------------

def test_extend_grows_the_volume_and_keeps_its_data(driver):
    vid = new_id()
    location = driver.create_volume(vid, 1)
    write_at(location, 5 * MiB)
    driver.extend_volume(vid, 3)
    assert os.stat(location).st_size == 3 * GiB
    assert read_at(location, 5 * MiB) == MARK
    driver.extend_volume(vid, 3)  # a repeat is harmless
    assert os.stat(location).st_size == 3 * GiB


def test_extend_refuses_to_shrink_and_a_missing_volume(driver):
    vid = new_id()
    location = driver.create_volume(vid, 2)
    with pytest.raises(DriverError, match="shrinking is refused"):
        driver.extend_volume(vid, 1)
    assert os.stat(location).st_size == 2 * GiB
    with pytest.raises(DriverError, match="does not exist"):
        driver.extend_volume(new_id(), 1)


# -- capacity --------------------------------------------------------------------------------------

def test_capacity_counts_apparent_sizes_of_volumes_and_snapshots(tmp_path):
    driver = FileDriver("backend-a", path=str(tmp_path / "store"), capacity_gb=10)
    assert driver.capacity() == drivers.Capacity(total_gb=10, free_gb=10, allocated_gb=0)
    a, b = new_id(), new_id()
    driver.create_volume(a, 2)
    driver.create_volume(b, 3)
    driver.create_snapshot(new_id(), a)
    assert driver.capacity() == drivers.Capacity(total_gb=10, free_gb=3, allocated_gb=7)

    # A leftover temporary file of a crashed copy is not a volume.
    with open(os.path.join(driver.volumes_dir, f".volume-{a}.x.tmp"), "wb") as f:
        f.truncate(5 * GiB)
    assert driver.capacity().allocated_gb == 7

    # Over-provisioned: free never goes below zero.
    driver.create_volume(new_id(), 4)
    assert driver.capacity() == drivers.Capacity(total_gb=10, free_gb=0, allocated_gb=11)


def test_allocated_is_rounded_up_to_whole_gib(tmp_path):
    driver = FileDriver("backend-a", path=str(tmp_path / "store"), capacity_gb=5)
    driver.create_volume(new_id(), 1)
    with open(os.path.join(driver.volumes_dir, f"volume-{new_id()}"), "wb") as f:
        f.write(b"x")  # a file of one byte, as if written by hand
    assert driver.capacity() == drivers.Capacity(total_gb=5, free_gb=3, allocated_gb=2)


def test_total_is_the_filesystem_size_without_capacity_gb(driver):
    fs = os.statvfs(driver.path)
    assert driver.capacity().total_gb == fs.f_blocks * fs.f_frsize // GiB > 0


def test_capabilities_are_cinder_shaped_with_the_backend_as_one_pool(tmp_path):
    driver = FileDriver("backend-a", path=str(tmp_path / "store"), capacity_gb=10)
    driver.create_volume(new_id(), 4)
    sizes = {"total_capacity_gb": 10, "free_capacity_gb": 6, "allocated_capacity_gb": 4}
    assert driver.capabilities() == {
        "volume_backend_name": "backend-a", "vendor_name": "volchain", "driver_version": "1.0",
        "storage_protocol": "file", **sizes, "thin_provisioning_support": True,
        "pools": [{"pool_name": "backend-a", **sizes}],
    }


# -- arguments and loading -------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", [
    "../../escape", "a/b", "", "not-a-uuid", str(uuid.uuid4()) + "\n", str(uuid.uuid4()) + "/../../x",
])
def test_an_id_that_is_not_a_uuid_is_refused_before_touching_the_disk(driver, tmp_path, bad_id):
    good = new_id()
    driver.create_volume(good, 1)
    before = sorted(p for p in tmp_path.rglob("*"))
    calls = [
        lambda: driver.create_volume(bad_id, 1),
        lambda: driver.delete_volume(bad_id),
        lambda: driver.extend_volume(bad_id, 2),
        lambda: driver.create_cloned_volume(bad_id, good, 1),
        lambda: driver.create_snapshot(bad_id, good),
        lambda: driver.create_snapshot(new_id(), bad_id),
        lambda: driver.delete_snapshot(bad_id),
    ]
    for call in calls:
        with pytest.raises(DriverError, match="not a UUID"):
            call()
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "1"])
def test_a_size_that_is_not_a_positive_whole_gib_is_refused(driver, size):
    with pytest.raises(DriverError, match="invalid size"):
        driver.create_volume(new_id(), size)
    assert os.listdir(driver.volumes_dir) == []


def test_load_builds_the_named_driver_and_names_the_known_ones_otherwise(tmp_path):
    loaded = drivers.load("file", "backend-b", path=str(tmp_path / "store"), capacity_gb=3)
    assert isinstance(loaded, FileDriver) and loaded.name == "file"
    assert loaded.backend_name == "backend-b" and loaded.capacity().total_gb == 3
    assert os.path.isdir(tmp_path / "store" / "volumes") and os.path.isdir(tmp_path / "store" / "snapshots")
    with pytest.raises(ValueError, match=r"unknown volume driver 'nope'; known: file"):
        drivers.load("nope", "backend-b")
