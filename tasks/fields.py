"""Cinder's rules for what users name and tag things with: names, descriptions and metadata.

One place for them: the create chain's first step, the snapshot flow and the REST API (volume
create and update, snapshot create and update) all call these.
"""

from __future__ import annotations

from typing import Any

from tasks import errors

MAX_FIELD_LEN = 255
MAX_METADATA_ITEMS = 128


def bounded_text(field: str, value: Any) -> str:
    """A name or description as stored: a string, trimmed, at most 255 characters (Cinder's 400)."""
    if not isinstance(value, str):
        raise errors.InvalidInput(reason=f"{field} must be a string.")
    value = value.strip()
    if len(value) > MAX_FIELD_LEN:
        raise errors.InvalidInput(reason=f"{field} has {len(value)} characters, more than {MAX_FIELD_LEN}.")
    return value


def check_metadata(metadata: Any) -> dict[str, str]:
    """Cinder's check_metadata_properties, plus a bound on the number of items."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise errors.InvalidInput(reason="Metadata should be a dict.")
    if len(metadata) > MAX_METADATA_ITEMS:
        raise errors.InvalidVolumeMetadata(
            reason=f"Too many metadata properties: {len(metadata)}, at most {MAX_METADATA_ITEMS}."
        )
    for key, value in metadata.items():
        if not key:
            raise errors.InvalidVolumeMetadata(reason="Metadata property key blank.")
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.InvalidVolumeMetadata(reason=f"Metadata property key {key} and its value must be strings.")
        if len(key) > MAX_FIELD_LEN:
            raise errors.InvalidVolumeMetadataSize(reason=f"Metadata property key {key} greater than 255 characters.")
        if len(value) > MAX_FIELD_LEN:
            raise errors.InvalidVolumeMetadataSize(
                reason=f"Metadata property key {key} value greater than 255 characters."
            )
    return dict(metadata)
