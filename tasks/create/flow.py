"""The create-volume flow: its five steps, in order, written once.

    1. extract_volume_request   validate; build the request spec
    2. quota_reserve            reserve volumes/gigabytes (+ per type)
    3. entry_create             insert the volume row (creating)
    4. quota_commit             commit the reservation
    5. volume_cast              send the create to the scheduler or the source's backend

A failure anywhere reverts every recorded step in reverse (tasks/runner.compensate).
"""

from __future__ import annotations

from tasks.create import entry_create, extract_volume_request, quota_commit, quota_reserve, volume_cast

KIND = "create_volume"  # FlowRun.kind of a create chain
STEPS = [extract_volume_request, quota_reserve, entry_create, quota_commit, volume_cast]
STEP_NAMES = [step.name for step in STEPS]
FINAL_STEP = volume_cast.name
