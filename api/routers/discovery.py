"""What clients probe: the extensions volchain supports and the filters its lists honour (3.33)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from api.deps import Scope, scope
from api.errors import HTTPError
from api.microversion import APIVersion, v
from api.openapi import query
from api.routers.messages import MESSAGE_FILTERS

router = APIRouter(tags=["discovery"])

NOT_FOUND = "The resource could not be found."

# (alias, name, description, updated) of Cinder's extensions whose resources or attributes volchain
# serves, worded as Cinder lists them.
EXTENSIONS = (
    ("os-admin-actions", "AdminActions", "Enable admin actions.", "2012-08-25T00:00:00+00:00"),
    ("os-availability-zone", "AvailabilityZones", "Describe Availability Zones.", "2013-06-27T00:00:00+00:00"),
    ("capabilities", "Capabilities", "Capabilities support.", "2015-08-31T00:00:00+00:00"),
    ("os-extended-services", "ExtendedServices", "Extended services support.", "2014-01-10T00:00:00-00:00"),
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended SnapshotAttributes support.",
     "2012-06-19T00:00:00+00:00"),
    ("os-quota-class-sets", "QuotaClasses", "Quota classes management support.", "2012-03-12T00:00:00+00:00"),
    ("os-quota-sets", "Quotas", "Quota management support.", "2011-08-08T00:00:00+00:00"),
    ("OS-SCH-HNT", "SchedulerHints", "Pass arbitrary key/value pairs to the scheduler.", "2013-04-18T00:00:00+00:00"),
    ("os-services", "Services", "Services support.", "2012-10-28T00:00:00-00:00"),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support.", "2011-08-24T00:00:00+00:00"),
    ("os-types-manage", "TypesManage", "Types manage support.", "2011-08-24T00:00:00+00:00"),
    ("os-used-limits", "UsedLimits", "Provide data on limited resources that are being used.",
     "2013-10-03T00:00:00+00:00"),
    ("os-volume-actions", "VolumeActions", "Enable volume actions.", "2012-05-31T00:00:00+00:00"),
    ("os-vol-host-attr", "VolumeHostAttribute", "Expose host as an attribute of a volume.",
     "2011-11-03T00:00:00+00:00"),
    ("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration_status as an attribute of a volume.",
     "2013-08-08T00:00:00+00:00"),
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an attribute of a volume.",
     "2011-11-03T00:00:00+00:00"),
)
_EXTENSIONS = {alias: {"alias": alias, "description": description, "links": [], "name": name, "updated": updated}
               for alias, name, description, updated in EXTENSIONS}


def resource_filters(version: APIVersion) -> dict[str, list[str]]:
    """The filter keys each list honours: volumes (api/routers/volumes.py `_list`; `name~`, a
    substring match, from 3.34), snapshots, messages (api/routers/messages.py)."""
    return {
        "volume": ["name", *(["name~"] if version >= v("3.34") else []), "status", "availability_zone", "metadata"],
        "snapshot": ["name", "status", "volume_id"],
        "message": list(MESSAGE_FILTERS),
    }


@router.get("/extensions", summary="The Cinder extensions volchain supports")
async def list_extensions(_s: Scope = Depends(scope)):
    return {"extensions": list(_EXTENSIONS.values())}


@router.get("/extensions/{alias}", summary="One extension, by alias")
async def show_extension(alias: str, _s: Scope = Depends(scope)):
    if alias not in _EXTENSIONS:
        raise HTTPError(404, NOT_FOUND)
    return {"extension": _EXTENSIONS[alias]}


@router.get("/resource_filters", summary="The filters each list honours (3.33); ?resource= for one",
            openapi_extra=query(resource="Only this resource's filters"))
async def list_resource_filters(request: Request, s: Scope = Depends(scope)):
    if s.version < v("3.33"):
        raise HTTPError(404, NOT_FOUND)
    filters = resource_filters(s.version)
    wanted = request.query_params.get("resource")
    if wanted:
        filters = {wanted: filters[wanted]} if wanted in filters else {}
    return {"resource_filters": [{"resource": name, "filters": keys} for name, keys in filters.items()]}
