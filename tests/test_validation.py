"""Create-volume validation (Cinder's REST controller, volume.API.create, ExtractVolumeRequestTask) through real worker processes.

Every rejected create must end `reverted` with Cinder's `{type, code, message}`, leave no volume
row and no step record behind, and keep quota usage equal to the rows. Expected messages are
written out from the spec's templates, not taken from `tasks/errors.py`.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, func, select

from models.flow_log import FlowRun
from models.key import EncryptionKey
from models.service import Service
from models.volume import Volume
from tasks import errors
from tasks.context import RequestContext
from tests import factories
from workers.submit import submit_create_volume, wait_for_flow

LUKS = {"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}
SIZE_RULE = (
    "Invalid volume size provided for create request: {} (size argument must be an integer "
    "(or string representation of an integer) and greater than zero)."
)
MULTIATTACH_REMOVED = (
    "multiattach parameter has been removed. The default behavior is to use multiattach enabled volume "
    "types. Contact your administrator to create a multiattach enabled volume type and use it to create "
    "multiattach volumes."
)
MALFORMED = (
    "The server could not comply with the request since it is either malformed or otherwise incorrect."
)


def err(type_name: str, code: int, message: str) -> dict:
    return {"type": type_name, "code": code, "message": message}


def invalid_input(reason: str) -> dict:
    return err("InvalidInput", 400, f"Invalid input received: {reason}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _volume_count(db, project_id: str) -> int:
    with db() as s:
        return s.scalar(select(func.count()).select_from(Volume).where(Volume.project_id == project_id))


@pytest.fixture
def rejected(workers, db, project, check_invariant):
    """Submit a create, wait for it, and assert it was refused by extract_volume_request with `expected`."""

    def run(expected: dict, context: RequestContext | None = None, **request):
        before = _volume_count(db, project)
        sub = submit_create_volume(context or factories.member(project), **request)
        out = wait_for_flow(sub.flow_id, timeout=30)
        assert out.state == "reverted", (out.state, out.error)
        assert out.error == expected
        with db() as s:
            flow = s.get(FlowRun, sub.flow_id)
            assert flow.failed_step == "extract_volume_request"
            assert flow.steps == {}
            assert s.get(Volume, sub.volume_id) is None
        assert _volume_count(db, project) == before
        check_invariant(project)
        return sub

    return run


@pytest.fixture
def created(workers, db, project, check_invariant):
    """Submit a create, wait for it, assert it succeeded; return the new volume row."""

    def run(context: RequestContext | None = None, **request) -> Volume:
        sub = submit_create_volume(context or factories.member(project), **request)
        out = wait_for_flow(sub.flow_id, timeout=30)
        assert out.state == "succeeded", (out.state, out.error)
        with db() as s:
            vol = s.get(Volume, sub.volume_id)
        assert vol is not None and vol.status == "creating" and vol.project_id == project
        check_invariant(project)
        return vol

    return run


@pytest.fixture
def new_zone(db):
    """Register a volume service in a new zone; the service rows are removed after the test."""
    ids = []

    def add(az: str | None = None) -> str:
        az = az or unique("az")
        ids.append(factories.service(db, unique("host"), az).id)
        return az

    yield add
    with db() as s, s.begin():
        s.execute(delete(Service).where(Service.id.in_(ids)))


# -- requests that need no rows of their own -------------------------------------------------------

NO_SUCH_UUID = "6f4c51e7-52bb-4b34-8a5e-a1bd1a0e6d2c"


@pytest.mark.parametrize(
    "request_, expected",
    [
        # 2.2.3: a truthy size that is not an int (or int string) > 0.
        pytest.param({"size": "abc"}, invalid_input(SIZE_RULE.format("abc")), id="size-abc"),
        pytest.param({"size": 1.5}, invalid_input(SIZE_RULE.format("1.5")), id="size-float"),
        pytest.param({"size": -1}, invalid_input(SIZE_RULE.format(-1)), id="size-negative"),
        pytest.param({"size": "0"}, invalid_input(SIZE_RULE.format("0")), id="size-zero-string"),
        pytest.param({"size": "2Gb"}, invalid_input(SIZE_RULE.format("2Gb")), id="size-with-unit"),
        # 2.3.4: a falsy size falls through to _extract_size.
        pytest.param({"size": 0}, invalid_input("Volume size '0' must be an integer and greater than 0"), id="size-zero"),
        # 2.2.4: no size and no source is a TypeError in Cinder: a bare 400.
        pytest.param({"name": "no-size"}, err("MalformedRequest", 400, MALFORMED), id="size-missing"),
        # 2.2.2
        pytest.param(
            {"size": 1, "source_replica": NO_SUCH_UUID},
            invalid_input("Creating a volume from a replica source was part of the replication v1 implementation "
                          "which is no longer available."),
            id="source-replica",
        ),
        # 2.1.3 / schema: names and descriptions are at most 255 characters after trimming.
        pytest.param({"size": 1, "name": "  " + "n" * 256 + "  "},
                     invalid_input("name has 256 characters, more than 255."), id="name-too-long"),
        pytest.param({"size": 1, "display_name": "n" * 256},
                     invalid_input("display_name has 256 characters, more than 255."), id="display-name-too-long"),
        pytest.param({"size": 1, "description": "d" * 300},
                     invalid_input("description has 300 characters, more than 255."), id="description-too-long"),
        # 2.2.10 metadata.
        pytest.param({"size": 1, "metadata": ["k", "v"]}, invalid_input("Metadata should be a dict."),
                     id="metadata-not-dict"),
        pytest.param({"size": 1, "metadata": {"": "v"}},
                     err("InvalidVolumeMetadata", 400, "Invalid metadata: Metadata property key blank."),
                     id="metadata-blank-key"),
        pytest.param({"size": 1, "metadata": {"k" * 256: "v"}},
                     err("InvalidVolumeMetadataSize", 400,
                         f"Invalid metadata size: Metadata property key {'k' * 256} greater than 255 characters."),
                     id="metadata-key-too-long"),
        pytest.param({"size": 1, "metadata": {"k": "v" * 256}},
                     err("InvalidVolumeMetadataSize", 400,
                         "Invalid metadata size: Metadata property key k value greater than 255 characters."),
                     id="metadata-value-too-long"),
        pytest.param({"size": 1, "metadata": {f"k{i}": "v" for i in range(129)}},
                     err("InvalidVolumeMetadata", 400, "Invalid metadata: Too many metadata properties: 129, at most 128."),
                     id="metadata-too-many-keys"),
        # 2.1.4 / 2.1.5: unknown ids are 404s.
        pytest.param({"size": 1, "volume_type": "no-such-type"},
                     err("VolumeTypeNotFoundByName", 404, "Volume type with name no-such-type could not be found."),
                     id="type-unknown-name"),
        pytest.param({"size": 1, "volume_type": NO_SUCH_UUID},
                     err("VolumeTypeNotFound", 404, f"Volume type {NO_SUCH_UUID} could not be found."),
                     id="type-unknown-uuid"),
        pytest.param({"snapshot_id": NO_SUCH_UUID},
                     err("SnapshotNotFound", 404, f"Snapshot {NO_SUCH_UUID} could not be found."),
                     id="snapshot-unknown"),
        pytest.param({"size": 1, "snapshot_id": "not-a-uuid"},
                     err("SnapshotNotFound", 404, "Snapshot not-a-uuid could not be found."),
                     id="snapshot-not-uuid"),
        pytest.param({"source_volid": NO_SUCH_UUID},
                     err("VolumeNotFound", 404, f"Volume {NO_SUCH_UUID} could not be found."),
                     id="source-volume-unknown"),
        # 2.1.7: an unknown imageRef (id or name) is a 400.
        pytest.param({"size": 1, "imageRef": NO_SUCH_UUID},
                     err("InvalidImageRef", 400, "Invalid image identifier or unable to access requested image."),
                     id="image-unknown-uuid"),
        pytest.param({"size": 1, "image_id": "no-such-image-name"},
                     err("InvalidImageRef", 400, "Invalid image identifier or unable to access requested image."),
                     id="image-unknown-name"),
        # 2.3.7
        pytest.param({"size": 1, "availability_zone": "no-such-az"},
                     err("InvalidAvailabilityZone", 400, "Availability zone 'no-such-az' is invalid."),
                     id="az-unknown"),
        # 2.1.10
        pytest.param({"size": 1, "multiattach": True}, err("Invalid", 400, MULTIATTACH_REMOVED), id="multiattach-true"),
        pytest.param({"size": 1, "multiattach": "yes"}, err("Invalid", 400, MULTIATTACH_REMOVED), id="multiattach-yes"),
        # Not supported yet: a clear 400.
        pytest.param({"size": 1, "consistencygroup_id": NO_SUCH_UUID},
                     err("UnsupportedRequest", 400,
                         "Creating a volume in a consistency group is not supported by volchain yet."),
                     id="consistency-group"),
        pytest.param({"size": 1, "group_id": NO_SUCH_UUID},
                     err("UnsupportedRequest", 400, "Creating a volume in a group is not supported by volchain yet."),
                     id="group"),
        pytest.param({"size": 1, "backup_id": NO_SUCH_UUID},
                     err("UnsupportedRequest", 400, "Creating a volume from a backup is not supported by volchain yet."),
                     id="backup"),
        # Order: 2.1 lookups come before 2.2's size check; the size check before metadata.
        pytest.param({"size": "abc", "volume_type": "no-such-type"},
                     err("VolumeTypeNotFoundByName", 404, "Volume type with name no-such-type could not be found."),
                     id="order-type-lookup-before-size"),
        pytest.param({"size": "abc", "multiattach": True}, err("Invalid", 400, MULTIATTACH_REMOVED),
                     id="order-multiattach-before-size"),
        pytest.param({"size": "abc", "metadata": ["x"]}, invalid_input(SIZE_RULE.format("abc")),
                     id="order-size-before-metadata"),
        pytest.param({"size": 1, "metadata": ["x"], "availability_zone": "no-such-az"},
                     invalid_input("Metadata should be a dict."), id="order-metadata-before-az"),
    ],
)
def test_an_invalid_create_is_reverted_with_cinders_error(rejected, request_, expected):
    rejected(expected, **request_)


def test_unknown_request_keys_are_refused_before_any_flow_is_recorded(db, database_url, project):
    with pytest.raises(errors.InvalidInput) as info:
        submit_create_volume(factories.member(project), size=1, user_id="u", bogus=True)
    assert info.value.to_dict() == invalid_input("Unknown create option(s): bogus, user_id.")
    with db() as s:
        assert s.scalar(select(func.count()).select_from(FlowRun).where(FlowRun.project_id == project)) == 0


# -- policy ----------------------------------------------------------------------------------------

def reader(project_id: str) -> RequestContext:
    return RequestContext(project_id, roles=("reader",))


def test_a_reader_may_not_create_a_volume(rejected, project):
    rejected(err("PolicyNotAuthorized", 403, "Policy doesn't allow volume:create to be performed."),
             context=reader(project), size=1)


def test_a_reader_creating_from_an_image_is_refused_by_the_image_rule(rejected, db, project):
    img = factories.image(db, size_gb=1)
    rejected(err("PolicyNotAuthorized", 403, "Policy doesn't allow volume:create_from_image to be performed."),
             context=reader(project), size=1, imageRef=img.id)


def test_lookups_run_before_policy_so_a_reader_gets_the_404(rejected, project):
    rejected(err("VolumeTypeNotFoundByName", 404, "Volume type with name no-such-type could not be found."),
             context=reader(project), size=1, volume_type="no-such-type")


def test_policy_runs_before_the_size_check(rejected, project):
    rejected(err("PolicyNotAuthorized", 403, "Policy doesn't allow volume:create to be performed."),
             context=reader(project), size="abc")


# -- volume types ------------------------------------------------------------------------------------

def test_a_private_type_of_another_project_looks_like_an_unknown_type(rejected, db, project):
    vt = factories.volume_type(db, is_public=False, projects=[uuid.uuid4().hex])
    rejected(err("VolumeTypeNotFoundByName", 404, f"Volume type with name {vt.name} could not be found."),
             size=1, volume_type=vt.name)
    rejected(err("VolumeTypeNotFound", 404, f"Volume type {vt.id} could not be found."), size=1, volume_type=vt.id)


def test_a_private_type_is_usable_by_its_project_and_by_an_admin(created, db, project):
    vt = factories.volume_type(db, is_public=False, projects=[project])
    assert created(size=1, volume_type=vt.name).volume_type_id == vt.id
    other = factories.volume_type(db, is_public=False, projects=[uuid.uuid4().hex])
    assert created(RequestContext.admin(project), size=1, volume_type=other.id).volume_type_id == other.id


@pytest.mark.parametrize(
    "specs, size, template",
    [
        ({"provisioning:min_vol_size": "5"}, 2,
         "Specified volume size of '2' is less than the minimum required size of '5' for volume type '{}'."),
        ({"provisioning:max_vol_size": "3"}, 4,
         "Specified volume size of '4' is greater than the maximum allowable size of '3' for volume type '{}'."),
    ],
    ids=["min", "max"],
)
def test_type_size_limits_are_enforced(rejected, db, specs, size, template):
    vt = factories.volume_type(db, extra_specs=specs)
    rejected(invalid_input(template.format(vt.name)), size=size, volume_type=vt.name)


def test_a_size_within_the_type_limits_is_accepted(created, db):
    vt = factories.volume_type(db, extra_specs={"provisioning:min_vol_size": "2", "provisioning:max_vol_size": "3"})
    assert created(size="3", volume_type=vt.id).size == 3


def test_an_encrypted_type_gets_a_new_key(created, db):
    vt = factories.volume_type(db, encryption=LUKS)
    vol = created(size=1, volume_type=vt.name)
    assert vol.encryption_key_id is not None
    with db() as s:
        key = s.get(EncryptionKey, vol.encryption_key_id)
    assert (key.algorithm, key.length) == ("aes", 256)


def test_a_multiattach_type_cannot_be_encrypted(rejected, db):
    vt = factories.volume_type(db, extra_specs={"multiattach": "<is> True"}, encryption=LUKS)
    with db() as s:
        keys_before = s.scalar(select(func.count()).select_from(EncryptionKey))
    rejected(err("InvalidVolume", 400, "Invalid volume: Multiattach cannot be used with encrypted volumes."),
             size=1, volume_type=vt.name)
    with db() as s:  # the key made before the check went with the rolled-back step
        assert s.scalar(select(func.count()).select_from(EncryptionKey)) == keys_before


def test_a_multiattach_type_without_encryption_makes_a_multiattach_volume(created, db):
    vt = factories.volume_type(db, extra_specs={"multiattach": "<is> True"})
    vol = created(size=1, volume_type=vt.name)
    assert (vol.multiattach, vol.encryption_key_id) == (True, None)


# -- snapshots and source volumes --------------------------------------------------------------------

def test_a_snapshot_of_another_project_looks_like_an_unknown_snapshot(rejected, db):
    other = uuid.uuid4().hex
    snap = factories.snapshot(db, other, factories.volume(db, other, size=1))
    rejected(err("SnapshotNotFound", 404, f"Snapshot {snap.id} could not be found."), size=1, snapshot_id=snap.id)


def test_a_source_volume_of_another_project_looks_like_an_unknown_volume(rejected, db):
    src = factories.volume(db, uuid.uuid4().hex, size=1)
    rejected(err("VolumeNotFound", 404, f"Volume {src.id} could not be found."), size=1, source_volid=src.id)


@pytest.mark.parametrize("status", ["creating", "error"])
def test_a_snapshot_must_be_available(rejected, db, project, status):
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1), status=status)
    rejected(err("InvalidSnapshot", 400, "Invalid snapshot: Originating snapshot status must be one of 'available' values"),
             snapshot_id=snap.id)


def test_a_source_volume_must_be_available_or_in_use(rejected, db, project):
    src = factories.volume(db, project, size=1, status="error")
    rejected(err("InvalidVolume", 400,
                 "Invalid volume: Originating source volume status must be one of 'available, in-use' values"),
             source_volid=src.id)


def test_the_status_check_comes_before_the_size_check(rejected, db, project):
    snap = factories.snapshot(db, project, factories.volume(db, project, size=5), status="error")
    rejected(err("InvalidSnapshot", 400, "Invalid snapshot: Originating snapshot status must be one of 'available' values"),
             size=1, snapshot_id=snap.id)


def test_a_volume_cannot_be_smaller_than_its_source_volume(rejected, db, project):
    src = factories.volume(db, project, size=5)
    rejected(invalid_input("Volume size '2'GB cannot be smaller than original volume size 5GB. "
                           "They must be >= original volume size."), size=2, source_volid=src.id)


def test_a_volume_cannot_be_smaller_than_its_snapshot(rejected, db, project):
    snap = factories.snapshot(db, project, factories.volume(db, project, size=5))
    rejected(invalid_input("Volume size '2'GB cannot be smaller than the snapshot size 5GB. "
                           "They must be >= original snapshot size."), size=2, snapshot_id=snap.id)


def test_a_snapshot_create_takes_the_snapshots_size_and_type_when_omitted(created, db, project):
    vt = factories.volume_type(db)
    snap = factories.snapshot(db, project, factories.volume(db, project, size=3, volume_type_id=vt.id))
    vol = created(snapshot_id=snap.id)
    assert (vol.size, vol.volume_type_id, vol.snapshot_id) == (3, vt.id, snap.id)


def test_a_source_volume_create_takes_the_sources_size_when_omitted(created, db, project):
    src = factories.volume(db, project, size=4)
    vol = created(source_volid=src.id)
    assert (vol.size, vol.source_volid) == (4, src.id)


def test_an_encrypted_snapshot_gets_a_clone_of_its_key(created, db, project):
    vt = factories.volume_type(db, encryption=LUKS)
    with db() as s, s.begin():
        key = EncryptionKey(algorithm="aes", length=256, secret="ab" * 32)
        s.add(key)
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1, volume_type_id=vt.id,
                                                            encryption_key_id=key.id))
    vol = created(snapshot_id=snap.id)
    assert vol.encryption_key_id not in (None, key.id)
    with db() as s:
        assert s.get(EncryptionKey, vol.encryption_key_id).secret == "ab" * 32


def test_only_one_source_may_be_given(rejected, db, project):
    src = factories.volume(db, project, size=1)
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1))
    img = factories.image(db, size_gb=1)
    message = "May specify only one of backup, imageRef, snapshot, source volume"
    rejected(invalid_input(message), snapshot_id=snap.id, source_volid=src.id)
    rejected(invalid_input(message), size=1, imageRef=img.id, snapshot_id=snap.id)


def test_a_requested_type_must_be_retype_compatible_with_the_source(rejected, db, project):
    encrypted = factories.volume_type(db, encryption=LUKS)  # encryption differs from the default type's
    src = factories.volume(db, project, size=1)
    rejected(invalid_input(f"Invalid volume_type provided: {encrypted.id} (requested type is not compatible; "
                           "either match source volume, or omit type argument)."),
             source_volid=src.id, volume_type=encrypted.name)
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1))
    rejected(invalid_input(f"Invalid volume_type provided: {encrypted.id} (requested type is not compatible; "
                           "recommend omitting the type argument)."),
             snapshot_id=snap.id, volume_type=encrypted.name)


# -- images ------------------------------------------------------------------------------------------

def test_an_image_name_matching_two_images_is_a_conflict(rejected, db):
    name = unique("twin")
    factories.image(db, name=name, size_gb=1)
    factories.image(db, name=name, size_gb=1)
    rejected(err("MultipleImageMatches", 409, f"Multiple matches found for '{name}', use an ID to be more specific."),
             size=1, imageRef=name)


def test_a_private_image_of_another_project_is_an_invalid_image_ref(rejected, db):
    img = factories.image(db, owner=uuid.uuid4().hex, visibility="private", size_gb=1)
    rejected(err("InvalidImageRef", 400, "Invalid image identifier or unable to access requested image."),
             size=1, imageRef=img.id)


@pytest.mark.parametrize(
    "image_kwargs, size, expected",
    [
        ({"status": "queued"}, 1, lambda i: invalid_input(f"Image {i} is not active.")),
        ({"size_gb": 1.5}, 1, lambda i: invalid_input("Size of specified image 2GB is larger than volume size 1GB.")),
        ({"size_gb": 1, "min_disk": 5}, 2,
         lambda i: invalid_input("Volume size 2GB cannot be smaller than the image minDisk size 5GB.")),
        ({"size_gb": 1, "virtual_size_gb": 1.2}, 1,
         lambda i: err("ImageUnacceptable", 400,
                       f"Image {i} is unacceptable: Image virtual size is 2GB and doesn't fit in a volume of size 1GB.")),
        # 2.3.5 (image) runs before 2.3.7 (zone).
        ({"status": "queued", "_az": "no-such-az"}, 1, lambda i: invalid_input(f"Image {i} is not active.")),
    ],
    ids=["not-active", "larger-than-volume", "min-disk", "virtual-size", "image-before-az"],
)
def test_an_image_must_fit_the_volume(rejected, db, image_kwargs, size, expected):
    image_kwargs = dict(image_kwargs)
    extra = {"availability_zone": image_kwargs.pop("_az")} if "_az" in image_kwargs else {}
    img = factories.image(db, **image_kwargs)
    rejected(expected(img.id), size=size, imageRef=img.id, **extra)


def test_an_image_create_with_enough_room_succeeds(created, db):
    img = factories.image(db, name=unique("img"), size_gb=1.5, virtual_size_gb=1.9, min_disk=2)
    vol = created(size=2, imageRef=f"http://glance.example/v2/images/{img.id}")
    assert (vol.size, vol.image_id) == (2, img.id)


def test_an_image_of_several_gigabytes_is_checked_against_the_volume_size(rejected, db):
    """Image sizes are bytes: a 2.5 GiB image (virtual 10 GiB) is ordinary and must be storable."""
    img = factories.image(db, size_gb=2.5, virtual_size_gb=10)
    rejected(invalid_input("Size of specified image 3GB is larger than volume size 2GB."), size=2, imageRef=img.id)


def test_an_image_by_unique_name_takes_its_volume_type_property(created, db):
    vt = factories.volume_type(db)
    img = factories.image(db, name=unique("img"), size_gb=1, properties={"cinder_img_volume_type": vt.name})
    vol = created(size=1, image_id=img.name)
    assert (vol.image_id, vol.volume_type_id) == (img.id, vt.id)


def test_an_image_naming_an_unknown_type_is_a_404(rejected, db):
    img = factories.image(db, size_gb=1, properties={"cinder_img_volume_type": "no-such-type"})
    rejected(err("VolumeTypeNotFoundByName", 404, "Volume type with name no-such-type could not be found."),
             size=1, imageRef=img.id)


# -- availability zones ------------------------------------------------------------------------------

def test_a_zone_becomes_valid_once_a_volume_service_reports_it(rejected, created, new_zone):
    az = unique("az")
    rejected(err("InvalidAvailabilityZone", 400, f"Availability zone '{az}' is invalid."), size=1, availability_zone=az)
    new_zone(az)
    assert created(size=1, availability_zone=az).availability_zone == az


def test_a_type_restricted_to_unknown_zones_is_refused(rejected, db):
    vt = factories.volume_type(db, extra_specs={"RESKEY:availability_zones": " gone-a, ,gone-b "})
    # Cinder renders the list as Python does; so do we.
    rejected(err("InvalidTypeAvailabilityZones", 400,
                 "Volume type is only supported in these availability zones: ['gone-a', 'gone-b']"),
             size=1, volume_type=vt.name)


def test_a_type_restriction_rejects_a_valid_zone_outside_it(rejected, created, db, new_zone):
    az = new_zone()
    vt = factories.volume_type(db, extra_specs={"RESKEY:availability_zones": "nova,gone"})
    rejected(err("InvalidAvailabilityZone", 400, f"Availability zone '{az}' is invalid."),
             size=1, volume_type=vt.name, availability_zone=az)
    assert created(size=1, volume_type=vt.name).availability_zone == "nova"  # the only safe zone


def test_a_clone_must_stay_in_its_sources_zone(rejected, db, project, new_zone):
    az = new_zone()
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1, availability_zone=az))
    rejected(invalid_input("Volume must be in the same availability zone as the snapshot"),
             snapshot_id=snap.id, availability_zone="nova")
    src = factories.volume(db, project, size=1, availability_zone=az)
    rejected(invalid_input("Volume must be in the same availability zone as the source volume"),
             source_volid=src.id, availability_zone="nova")


def test_a_clone_without_a_zone_inherits_its_sources_zone(created, db, project, new_zone):
    az = new_zone()
    snap = factories.snapshot(db, project, factories.volume(db, project, size=1, availability_zone=az))
    assert created(snapshot_id=snap.id).availability_zone == az


# -- the plain success path ---------------------------------------------------------------------------

def test_a_valid_create_trims_its_name_and_keeps_a_full_length_one(created):
    vol = created(size="2", name="  " + "n" * 255 + "  ", description=" d ", metadata={"k" * 255: "v" * 255})
    assert (vol.size, vol.display_name, vol.display_description) == (2, "n" * 255, "d")


def test_a_missing_default_type_is_a_500_and_the_flow_is_reverted(db, project, check_invariant):
    """VolumeTypeDefaultMisconfiguredError (500). Run in-process with a default type name that does
    not exist, since deleting the real `__DEFAULT__` would disturb the shared workers."""
    import dataclasses

    from tasks.create.flow import STEPS
    from tasks.runner import compensate, record_failure, run_step
    from workers.runtime import get_runtime

    env = dataclasses.replace(get_runtime().env, default_volume_type="no-such-default")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    with pytest.raises(errors.VolumeTypeDefaultMisconfiguredError) as caught:
        run_step(db, STEPS[0], ctx.flow_id, env)
    assert caught.value.to_dict() == {
        "type": "VolumeTypeDefaultMisconfiguredError", "code": 500,
        "message": "The request cannot be fulfilled as the default volume type no-such-default cannot be found.",
    }
    record_failure(db, ctx.flow_id, STEPS[0].name, caught.value.to_dict())
    assert compensate(db, ctx.flow_id, STEPS, env) == "reverted"
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None
    check_invariant(project)
