"""The extend flow: one per os-extend request.

    1. extend_request      (API process) check the size, reserve the extra gigabytes, `extending`, cast
    2. extend_on_backend   (the volume's volume service) driver extend, commit, new size, `available`
"""

from __future__ import annotations

from tasks.extend import extend_on_backend, extend_request

KIND = "extend_volume"
STEPS = [extend_request, extend_on_backend]
