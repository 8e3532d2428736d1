"""Request schemas, shaped like Cinder's so that jsonschema words errors as Cinder does.

`validate(schema, body)` raises HTTPError(400) with Cinder's message:
"Invalid input for field/attribute <field>. Value: <value>. <jsonschema message>", or the bare
message for errors at the top level (e.g. "'volume' is a required property").
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from api.errors import HTTPError
from api.microversion import APIVersion, v
from tasks.lookups import is_uuid_like

_format_checker = jsonschema.FormatChecker()


@_format_checker.checks("uuid")
def _is_uuid(instance: object) -> bool:
    return not isinstance(instance, str) or is_uuid_like(instance)


UUID = {"type": "string", "format": "uuid"}
OPTIONAL_UUID = {"oneOf": [{"type": "null"}, UUID]}
NAME = {"type": ["string", "null"]}  # trimmed, then bounded (see check_names)
NULLABLE_STRING_255 = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
BOOLEAN = {
    "type": ["boolean", "string", "null"],
    "enum": [True, "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t",
             False, "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n", "f", None],
}
METADATA = {
    "type": ["object", "null"],
    "patternProperties": {"^[a-zA-Z0-9-_:. /]{1,255}$": {"type": "string", "maxLength": 255}},
    "additionalProperties": False,
}
SIZE = {"type": ["integer", "string", "null"], "pattern": "^[0-9]+$", "minimum": 1, "maximum": 2147483647}
HOST_LIST = {"oneOf": [UUID, {"type": "array", "items": UUID, "uniqueItems": True}]}
SCHEDULER_HINTS = {
    "type": ["object", "null"],
    "properties": {
        "local_to_instance": UUID,
        "different_host": HOST_LIST,
        "same_host": HOST_LIST,
        "query": {"type": ["string", "object"]},
    },
    "additionalProperties": True,
}

_VOLUME_PROPERTIES = {
    "name": NAME,
    "description": NAME,
    "display_name": NAME,
    "display_description": NAME,
    "volume_type": NULLABLE_STRING_255,
    "metadata": METADATA,
    "snapshot_id": OPTIONAL_UUID,
    "source_volid": OPTIONAL_UUID,
    "consistencygroup_id": OPTIONAL_UUID,
    "size": SIZE,
    "availability_zone": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
    "multiattach": BOOLEAN,
    "image_id": NULLABLE_STRING_255,
    "imageRef": NULLABLE_STRING_255,
}


def create_volume_schema(version: APIVersion) -> dict[str, Any]:
    props = copy.deepcopy(_VOLUME_PROPERTIES)
    if version >= v("3.13"):
        props["group_id"] = NULLABLE_STRING_255
    if version >= v("3.47"):
        props["backup_id"] = OPTIONAL_UUID
    volume = {"type": "object", "properties": props, "additionalProperties": version < v("3.53")}
    return {
        "type": "object",
        "properties": {"volume": volume, "OS-SCH-HNT:scheduler_hints": SCHEDULER_HINTS},
        "required": ["volume"],
        "additionalProperties": False,
    }


# What /openapi.json shows for a create: the newest microversion's body (older ones also take
# unknown keys in `volume`, and no group_id before 3.13 nor backup_id before 3.47).
CREATE_VOLUME_DOCUMENTED = create_volume_schema(v("3.53"))

_SCHEMAS: dict[APIVersion, dict] = {}


def create_volume_schema_cached(version: APIVersion) -> dict[str, Any]:
    key = v("3.53") if version >= v("3.53") else v("3.47") if version >= v("3.47") else \
        v("3.13") if version >= v("3.13") else v("3.0")
    if key not in _SCHEMAS:
        _SCHEMAS[key] = create_volume_schema(key)
    return _SCHEMAS[key]


RESET_STATUS = {
    "type": "object",
    "properties": {
        "os-reset_status": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": [
                    "available", "error", "creating", "deleting", "in-use", "attaching", "detaching",
                    "error_deleting", "maintenance", "reserved", "downloading", "uploading", "retyping",
                    "extending", "error_extending", "backing-up", "restoring-backup", "error_restoring",
                    "error_managing", "managing"]},
                "attach_status": {"type": "string", "enum": ["attached", "detached"]},
                "migration_status": {"type": ["string", "null"], "enum": [
                    "migrating", "error", "success", "completing", "none", "starting", None]},
            },
            "additionalProperties": False,
            "anyOf": [{"required": ["status"]}, {"required": ["attach_status"]}, {"required": ["migration_status"]}],
        },
    },
    "required": ["os-reset_status"],
    "additionalProperties": False,
}

# The bodies below are checked in the routes, key by key, with Cinder's own messages (not
# jsonschema's); these schemas describe the same rules for /openapi.json.
VOLUME_ACTION = {
    "type": "object",
    "description": "Exactly one action.",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "os-extend": {"type": "object", "properties": {"new_size": SIZE}, "required": ["new_size"]},
        "os-force_delete": {"description": "Admin only; the value is ignored."},
        "os-reset_status": RESET_STATUS["properties"]["os-reset_status"],
    },
    "additionalProperties": False,
}
_SNAPSHOT_TEXT = {"name": NAME, "description": NAME, "display_name": NAME, "display_description": NAME}
SNAPSHOT_CREATE = {
    "type": "object",
    "properties": {"snapshot": {"type": "object", "properties": {
        "volume_id": UUID, **_SNAPSHOT_TEXT, "force": {"type": ["boolean", "string"]}, "metadata": METADATA},
        "required": ["volume_id"]}},
    "required": ["snapshot"],
}
SNAPSHOT_UPDATE = {
    "type": "object",
    "properties": {"snapshot": {"type": "object", "properties": _SNAPSHOT_TEXT, "minProperties": 1,
                                "additionalProperties": False}},
    "required": ["snapshot"],
}
ONE_EXTRA_SPEC = {
    "type": "object",
    "description": "One item, whose key is the URL's `{key}`.",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": {"type": "string", "maxLength": 255},
}

VOLUME_TYPE_CREATE = {
    "type": "object",
    "properties": {
        "volume_type": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
                "os-volume-type-access:is_public": BOOLEAN,
                "extra_specs": {
                    "type": "object",
                    "patternProperties": {"^[a-zA-Z0-9-_:. /]{1,255}$": {"type": "string", "maxLength": 255}},
                    "additionalProperties": False,
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    },
    "required": ["volume_type"],
    "additionalProperties": False,
}

EXTRA_SPECS = {
    "type": "object",
    "properties": {
        "extra_specs": {
            "type": "object",
            "patternProperties": {"^[a-zA-Z0-9-_:. /]{1,255}$": {"type": "string", "maxLength": 255}},
            "additionalProperties": False,
        },
    },
    "required": ["extra_specs"],
    "additionalProperties": False,
}

QUOTA_VALUE = {"type": ["integer", "string"], "pattern": "^-?[0-9]+$", "minimum": -1, "maximum": 2147483647}
QUOTA_SET = {
    "type": "object",
    "properties": {"quota_set": {"type": "object", "additionalProperties": QUOTA_VALUE}},
    "required": ["quota_set"],
    "additionalProperties": False,
}
QUOTA_CLASS_SET = {
    "type": "object",
    "properties": {"quota_class_set": {"type": "object", "additionalProperties": QUOTA_VALUE}},
    "required": ["quota_class_set"],
    "additionalProperties": False,
}


def _numeric_string_aware(check):
    """Cinder's validator applies minimum/maximum to digit strings too ("0" is below 1)."""

    def keyword(validator, bound, instance, schema):
        if isinstance(instance, str) and instance.lstrip("-").isdigit():
            instance = int(instance)
        yield from check(validator, bound, instance, schema)

    return keyword


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "minimum": _numeric_string_aware(jsonschema.Draft4Validator.VALIDATORS["minimum"]),
    "maximum": _numeric_string_aware(jsonschema.Draft4Validator.VALIDATORS["maximum"]),
})


def validate(schema: dict[str, Any], body: Any) -> None:
    validator = _Validator(schema, format_checker=_format_checker)
    error = next(iter(validator.iter_errors(body)), None)  # as Cinder: the oneOf error itself, not its branches
    if error is None:
        return
    if error.path:
        field = error.path[-1]
        raise HTTPError(400, f"Invalid input for field/attribute {field}. Value: {error.instance}. {error.message}")
    raise HTTPError(400, error.message)
