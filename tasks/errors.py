"""The error tree: Cinder's exception names, HTTP codes and message templates.

A `VolchainError` renders its message from a template and the keyword arguments given, like
Cinder's `CinderException`. Errors cross process boundaries as data (`to_dict`: type, code,
message); `from_dict` rebuilds one on the other side through REGISTRY, the explicit table of
every error class by name (at the end of this module). Every error a step, the runner, the quota
engine, the catalogue or a process's set-up raises lives here; the HTTP layer's own (bad token,
bad microversion: api/) and the command line's usage errors (cli/parsing.py) stay with them.
The constructor takes keyword arguments only, so an error survives Celery's exception wrapping.
"""

from __future__ import annotations

from typing import Any


class VolchainError(Exception):
    """Base error; `http_status` is what the REST front end answers."""

    message = "An unknown exception occurred."
    http_status = 500
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.message
        self.msg = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.msg

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "code": self.http_status, "message": self.msg}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolchainError:
        """Rebuild an error recorded by `to_dict` (an unknown type becomes a plain VolchainError)."""
        klass = REGISTRY.get(data.get("type", ""), VolchainError)
        err = klass(data.get("message", VolchainError.message))
        if klass is VolchainError:
            err.http_status = int(data.get("code", 500))
        return err


# 400 ------------------------------------------------------------------------------------------
class Invalid(VolchainError):
    message = "Unacceptable parameters."
    http_status = 400


class InvalidInput(Invalid):
    message = "Invalid input received: %(reason)s"


class InvalidVolume(Invalid):
    message = "Invalid volume: %(reason)s"


class InvalidSnapshot(Invalid):
    message = "Invalid snapshot: %(reason)s"


class InvalidVolumeType(Invalid):
    message = "Invalid volume type: %(reason)s"


class InvalidVolumeMetadata(Invalid):
    message = "Invalid metadata: %(reason)s"


class InvalidVolumeMetadataSize(Invalid):
    message = "Invalid metadata size: %(reason)s"


class InvalidAvailabilityZone(Invalid):
    message = "Availability zone '%(az)s' is invalid."


class InvalidTypeAvailabilityZones(Invalid):
    message = "Volume type is only supported in these availability zones: %(az)s"


class ImageUnacceptable(Invalid):
    message = "Image %(image_id)s is unacceptable: %(reason)s"


class InvalidImageRef(Invalid):
    message = "Invalid image identifier or unable to access requested image."


class InvalidReservationExpiration(Invalid):
    message = "Invalid reservation expiration %(expire)s."


class InvalidQuotaValue(Invalid):
    message = "Change would make usage less than 0 for the following resources: %(unders)s"


class VolumeTypeInUse(Invalid):
    message = "Volume Type %(volume_type_id)s deletion is not allowed with volumes present with the type."


class MalformedRequest(Invalid):
    """Cinder's answer to an internal TypeError (e.g. a create with no size and no source)."""

    message = (
        "The server could not comply with the request since it is either malformed "
        "or otherwise incorrect."
    )


class UnsupportedRequest(Invalid):
    """A feature Cinder has and volchain does not support yet (groups, backups, ...)."""

    message = "%(feature)s is not supported by volchain yet."


# 403 ------------------------------------------------------------------------------------------
class NotAuthorized(VolchainError):
    message = "Not authorized."
    http_status = 403


class PolicyNotAuthorized(NotAuthorized):
    message = "Policy doesn't allow %(action)s to be performed."


# 404 ------------------------------------------------------------------------------------------
class NotFound(VolchainError):
    message = "Resource could not be found."
    http_status = 404


class VolumeNotFound(NotFound):
    message = "Volume %(volume_id)s could not be found."


class SnapshotNotFound(NotFound):
    message = "Snapshot %(snapshot_id)s could not be found."


class ImageNotFound(NotFound):
    message = "Image %(image_id)s could not be found."


class VolumeTypeNotFound(NotFound):
    message = "Volume type %(volume_type_id)s could not be found."


class VolumeTypeNotFoundByName(VolumeTypeNotFound):
    message = "Volume type with name %(volume_type_name)s could not be found."


class VolumeTypeExtraSpecsNotFound(NotFound):
    message = "Volume Type %(volume_type_id)s has no extra specs with key %(extra_specs_key)s."


class QuotaResourceUnknown(NotFound):
    message = "Unknown quota resources %(unknown)s."


class FlowNotFound(NotFound):
    message = "Flow %(flow_id)s could not be found."


# 409 ------------------------------------------------------------------------------------------
class Conflict(VolchainError):
    message = "Conflict."
    http_status = 409


class VolumeTypeExists(Conflict):
    message = "Volume Type %(id)s already exists."


class FlowNotRunning(Conflict):
    """A step arrived for a flow that is already compensating or finished: it is dropped."""

    message = "Flow %(flow_id)s is %(state)s; step %(step)s is not run."


class DeletedWhileCreating(Conflict):
    message = "Volume %(volume_id)s was deleted before its create finished."


class CreateNeedsAttention(Conflict):
    message = ("The create of volume %(volume_id)s needs an operator's attention (flow %(flow_id)s); "
               "the volume cannot be deleted until it is resolved.")


class MultipleImageMatches(Conflict):
    message = "Multiple matches found for '%(image_ref)s', use an ID to be more specific."


# 413 ------------------------------------------------------------------------------------------
class QuotaError(VolchainError):
    message = "Quota exceeded: code=%(code)s"
    http_status = 413
    headers = {"Retry-After": "0"}


class VolumeSizeExceedsAvailableQuota(QuotaError):
    message = (
        "Requested volume or snapshot exceeds allowed %(name)s quota. Requested %(requested)sG, "
        "quota is %(quota)sG and %(consumed)sG has been consumed."
    )


class VolumeSizeExceedsLimit(QuotaError):
    message = "Requested volume size %(size)sG is larger than maximum allowed limit %(limit)sG."


class VolumeLimitExceeded(QuotaError):
    message = "Maximum number of volumes allowed (%(allowed)s) exceeded for quota '%(name)s'."


class SnapshotLimitExceeded(QuotaError):
    message = "Maximum number of snapshots allowed (%(allowed)s) exceeded"


class UnexpectedOverQuota(QuotaError):
    message = "Unexpected over quota on %(name)s."


class QuotaUsageOverflow(QuotaError):
    message = "Usage of %(resource)s would overflow its counter (limit %(limit)s)."


# 500 ------------------------------------------------------------------------------------------
class VolumeTypeDefaultMisconfiguredError(VolchainError):
    message = (
        "The request cannot be fulfilled as the default volume type %(volume_type_name)s "
        "cannot be found."
    )


class ServiceUnavailable(VolchainError):
    """The message broker (or another service volchain needs) is away: a 503 that names no
    internals. The cause goes to the log (tasks/casts.py, workers/submit.py)."""

    http_status = 503


class CastFailed(ServiceUnavailable):
    message = "The volume service is unavailable: the request for volume %(volume_id)s could not be sent. Try again later."


class ReservationExpired(VolchainError):
    message = "The quota reservation of volume %(volume_id)s expired before it was committed."


class FlowAborted(VolchainError):
    """Recorded on a create flow that an operator stopped (`volchain flow abort`)."""

    message = "The create of volume %(volume_id)s was aborted by an operator."


class CastNotReady(VolchainError):
    """A consumer got a cast before its sender's transaction committed (the volume it names is not
    handed over yet); the message is tried again shortly, nothing is recorded."""

    message = "Volume %(volume_id)s is not handed to %(host)s yet."


class InjectedFailure(VolchainError):
    """Raised by the failure-injection test facility, never in production."""

    message = "Injected failure in %(step)s (%(when)s)."


class OverQuota(VolchainError):
    """Internal: raised by the quota engine, mapped to a QuotaError subclass by the caller."""

    message = "Quota exceeded for resources: %(overs)s"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.overs: list[str] = kwargs.get("overs", [])
        self.quotas: dict[str, int] = kwargs.get("quotas", {})
        self.usages: dict[str, dict[str, int]] = kwargs.get("usages", {})


# Errors a step raises on purpose: logged without traceback and never retried.
EXPECTED_ERRORS = (Invalid, NotAuthorized, NotFound, Conflict, QuotaError,
                   VolumeTypeDefaultMisconfiguredError, InjectedFailure)


class IdempotencyKeyReused(VolchainError):
    http_status = 422
    message = "This Idempotency-Key was used with a different request; use a new key for a new request."


class SubmitFailed(ServiceUnavailable):
    message = "The volume service is unavailable: the create of volume %(volume_id)s could not be queued. Try again later."


class NotConfigured(Exception):
    """A setting a process needs is missing or wrong; the message is one line for the operator."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting} is not set or not usable: {reason}")


class EmbeddedError(Exception):
    """The embedded mode (workers/embedded.py) cannot run as asked; the message is one line for
    the user. Not a Cinder error: it stops a command before any flow, and never travels."""


# Every error class by the name it travels under (`to_dict`'s type). A class missing here comes
# back from `from_dict` as a plain VolchainError with its code and message (tests/test_runner.py
# checks that none is missing).
REGISTRY: dict[str, type[VolchainError]] = {klass.__name__: klass for klass in (
    VolchainError,
    Invalid, InvalidInput, InvalidVolume, InvalidSnapshot, InvalidVolumeType, InvalidVolumeMetadata,
    InvalidVolumeMetadataSize, InvalidAvailabilityZone, InvalidTypeAvailabilityZones, ImageUnacceptable,
    InvalidImageRef, InvalidReservationExpiration, InvalidQuotaValue, VolumeTypeInUse, MalformedRequest,
    UnsupportedRequest,
    NotAuthorized, PolicyNotAuthorized,
    NotFound, VolumeNotFound, SnapshotNotFound, ImageNotFound, VolumeTypeNotFound, VolumeTypeNotFoundByName,
    VolumeTypeExtraSpecsNotFound, QuotaResourceUnknown, FlowNotFound,
    Conflict, VolumeTypeExists, FlowNotRunning, DeletedWhileCreating, CreateNeedsAttention, MultipleImageMatches,
    QuotaError, VolumeSizeExceedsAvailableQuota, VolumeSizeExceedsLimit, VolumeLimitExceeded, SnapshotLimitExceeded,
    UnexpectedOverQuota, QuotaUsageOverflow,
    VolumeTypeDefaultMisconfiguredError, CastFailed, ReservationExpired, FlowAborted, CastNotReady,
    InjectedFailure, OverQuota, SubmitFailed, ServiceUnavailable, IdempotencyKeyReused,
)}
