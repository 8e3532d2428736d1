"""The snapshot flows: one per create or delete request.

create_snapshot:
    1. create_request      (API process) check the source, charge quota, row `creating`, cast
    2. create_on_backend   (the source's volume service) driver snapshot; row `available`
delete_snapshot:
    1. delete_request      (API process) check the status; `deleting`, cast
    2. delete_on_backend   (the volume service) driver delete, usage back, row deleted
"""

from __future__ import annotations

from tasks.snapshot import create_on_backend, create_request, delete_on_backend, delete_request

CREATE_KIND = "create_snapshot"
CREATE_STEPS = [create_request, create_on_backend]
DELETE_KIND = "delete_snapshot"
DELETE_STEPS = [delete_request, delete_on_backend]
