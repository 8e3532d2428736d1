"""The delete flow: one per delete request (DELETE /volumes/{id}, os-force_delete, `volchain volume delete`).

    1. delete_request      (API process) check the rules; delete at once, or `deleting` + cast
    2. delete_on_backend   (the volume's volume service) driver delete, usage back, row deleted
"""

from __future__ import annotations

from tasks.delete import delete_on_backend, delete_request

KIND = "delete_volume"
STEPS = [delete_request, delete_on_backend]
REQUEST_STEPS = [delete_request]  # what the API runs; the volume service runs the rest
