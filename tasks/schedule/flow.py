"""The scheduler's flow, one per create cast to the scheduler queue (its id: the message id with its queue).

    1. schedule_volume   filter and weigh the volume services; record the host; cast there
"""

from __future__ import annotations

from tasks.schedule import schedule_volume

KIND = "schedule_volume"
STEPS = [schedule_volume]
