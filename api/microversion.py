"""Microversions: parse `OpenStack-API-Version: volume 3.x`, negotiate, compare.

The maximum is the highest version whose volume behaviour volchain implements: the create
schema change at 3.53 (unknown keys refused), the view fields up to 3.65 (`consumes_quota`) and
project-less URLs (3.67). Snapshot-only versions in between change nothing we serve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

HEADER = "OpenStack-API-Version"
SERVICE = "volume"
_VERSION_RE = re.compile(r"^([1-9]\d*)\.(0|[1-9]\d*)$")


@total_ordering
@dataclass(frozen=True)
class APIVersion:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> APIVersion:
        match = _VERSION_RE.match(text.strip())
        if not match:
            raise ValueError(text)
        return cls(int(match.group(1)), int(match.group(2)))

    def __lt__(self, other: APIVersion) -> bool:
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN_VERSION = APIVersion(3, 0)
MAX_VERSION = APIVersion(3, 67)
UPDATED = "2026-11-25T00:00:00Z"


class VersionNotAcceptable(Exception):
    """406: a version outside [MIN, MAX]."""

    def __init__(self, requested: str) -> None:
        super().__init__(
            f"Version {requested} is not supported by the API. Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."
        )
        self.requested = requested


class InvalidVersionString(Exception):
    """400: a header that names no version."""

    def __init__(self, requested: str) -> None:
        super().__init__(f"API Version String {requested} is of invalid format. Must be of format MajorNum.MinorNum.")
        self.requested = requested


def negotiate(header_value: str | None) -> APIVersion:
    """The version a request gets: 3.0 without a header, MAX for `latest`, else the one asked for."""
    if not header_value:
        return MIN_VERSION
    wanted = None
    for part in header_value.split(","):
        words = part.strip().split(None, 1)
        if len(words) == 2 and words[0].lower() == SERVICE:
            wanted = words[1].strip()
    if wanted is None:
        return MIN_VERSION
    if wanted.lower() == "latest":
        return MAX_VERSION
    try:
        version = APIVersion.parse(wanted)
    except ValueError:
        raise InvalidVersionString(wanted) from None
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise VersionNotAcceptable(wanted)
    return version


def v(text: str) -> APIVersion:
    return APIVersion.parse(text)
