"""`volchain volume list|show|delete`, run as a subprocess against the test database."""

from __future__ import annotations

import argparse
import uuid

from sqlalchemy import select

from cli.main import build_parser
from models.volume import Volume, VolumeMetadata
from tests import factories
from tests.test_cli import assert_one_line_error, field, ok, ok_json, volchain


def add_metadata(db, volume_id: str, **items: str) -> None:
    with db() as session, session.begin():
        session.add_all(VolumeMetadata(volume_id=volume_id, key=k, value=x) for k, x in items.items())


def test_list_json_shows_the_projects_live_volumes_newest_first(db, project):
    older = factories.volume(db, project, size=2)
    newer = factories.volume(db, project, size=3, status="error")
    add_metadata(db, newer.id, k="v")
    other = factories.volume(db, uuid.uuid4().hex)
    with db() as session, session.begin():
        gone = Volume(project_id=project, size=1, status="deleted", volume_type_id=factories.DEFAULT_TYPE_ID,
                      deleted=True)
        session.add(gone)

    listed = ok_json("volume", "list", "--project", project)
    assert [v["id"] for v in listed] == [newer.id, older.id]
    first = listed[0]
    assert (first["project_id"], first["status"], first["size"], first["volume_type"], first["metadata"]) == (
        project, "error", 3, "__DEFAULT__", {"k": "v"})
    assert (listed[1]["status"], listed[1]["size"], listed[1]["metadata"]) == ("available", 2, {})

    errored = ok_json("volume", "list", "--project", project, "--status", "error")
    assert [v["id"] for v in errored] == [newer.id]
    everyone = {v["id"] for v in ok_json("volume", "list", "--all-projects")}
    assert {older.id, newer.id, other.id} <= everyone and gone.id not in everyone


def test_list_prints_a_table_for_people(db, project):
    vol = factories.volume(db, project, size=4)
    lines = ok("volume", "list", "--project", project).stdout.splitlines()
    assert lines[0].split() == ["ID", "PROJECT", "NAME", "STATUS", "SIZE", "TYPE", "CREATED"]
    [row] = lines[1:]
    assert row.split()[:6] == [vol.id, project, "-", "available", "4", "__DEFAULT__"]


def test_list_needs_a_project_or_all_projects(database_url):
    assert_one_line_error(volchain("volume", "list"), "one of the arguments --project --all-projects is required")
    assert_one_line_error(volchain("volume", "list", "--project", "p", "--all-projects"), "not allowed with")


def test_show_gives_one_volume_with_its_metadata(db, project):
    vol = factories.volume(db, project, size=5, host="node3@lvm#pool")
    add_metadata(db, vol.id, a="1", b="2")
    shown = ok_json("volume", "show", vol.id)
    assert (shown["id"], shown["project_id"], shown["size"], shown["host"], shown["status"]) == (
        vol.id, project, 5, "node3@lvm#pool", "available")
    assert shown["metadata"] == {"a": "1", "b": "2"} and shown["volume_type"] == "__DEFAULT__"
    text = ok("volume", "show", vol.id).stdout
    assert (field(text, "id"), field(text, "status"), field(text, "metadata")) == (vol.id, "available", "a=1,b=2")


def test_show_and_delete_of_a_missing_volume_are_one_line_errors(database_url):
    missing = str(uuid.uuid4())
    for args in (("volume", "show", missing), ("volume", "show", missing, "--json"), ("volume", "delete", missing)):
        assert_one_line_error(volchain(*args), f"VolumeNotFound: Volume {missing} could not be found.")


def test_delete_with_another_project_is_not_found_and_deletes_nothing(db, project):
    vol = factories.volume(db, project)
    assert_one_line_error(volchain("volume", "delete", vol.id, "--project", uuid.uuid4().hex),
                          f"Volume {vol.id} could not be found.")
    with db() as session:
        row = session.get(Volume, vol.id)
    assert (row.status, row.deleted) == ("available", False)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help_text():
    actions = _subcommands(_subcommands(build_parser())["volume"])
    assert set(actions) == {"list", "show", "delete"}
    for name, parser in actions.items():
        for action in parser._actions:
            assert action.help, f"volume {name}: {action.dest} has no help"


def test_delete_answers_the_volume_and_its_new_status(workers, db, project):
    vol = factories.volume(db, project)
    out = ok_json("volume", "delete", vol.id, "--project", project)
    assert out["volume_id"] == vol.id and out["status"] in ("deleting", "deleted")
    with db() as session:
        row = session.get(Volume, vol.id)
    assert row.deleted if out["status"] == "deleted" else row.status in ("deleting", "deleted")
    assert vol.id not in {v["id"] for v in ok_json("volume", "list", "--project", project, "--status", "available")}


def test_delete_keeps_a_volume_with_snapshots_unless_cascade(workers, db, project):
    """Cinder refuses to delete a volume that has snapshots unless the delete cascades."""
    vol = factories.volume(db, project)
    factories.snapshot(db, project, vol)
    refused = volchain("volume", "delete", vol.id)
    assert_one_line_error(refused, "InvalidVolume")
    with db() as session:
        assert session.scalar(select(Volume.status).where(Volume.id == vol.id)) == "available"
    out = ok_json("volume", "delete", vol.id, "--cascade")
    assert out["volume_id"] == vol.id and out["status"] in ("deleting", "deleted")


def test_force_deletes_a_volume_whose_status_refuses_a_plain_delete(workers, db, project):
    """Cinder's plain delete wants available, error, ...; a force delete skips that check."""
    vol = factories.volume(db, project, status="maintenance")
    assert_one_line_error(volchain("volume", "delete", vol.id), "InvalidVolume")
    out = ok_json("volume", "delete", vol.id, "--force")
    assert out["volume_id"] == vol.id and out["status"] in ("deleting", "deleted")
