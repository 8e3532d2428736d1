"""The volume service's create flow, one per create cast to a `volume.<host@backend>` queue
(its id: the message id with its queue).

    1. create_on_backend   the driver makes the volume; the row becomes `available`
"""

from __future__ import annotations

from tasks.provision import create_on_backend

KIND = "provision_volume"
STEPS = [create_on_backend]
