"""The durable flow log: one row per create; each step that took effect is recorded on it.

Flow states and their edges:

    running       -> succeeded       the cast was sent (volume_cast recorded)
    running       -> compensating    a step failed, its errback fired, or the sweeper gave up waiting
    compensating  -> reverted        every recorded step was undone, in reverse
    compensating  -> needs_attention compensation kept failing; an operator must look

Step records live in `FlowRun.steps`: step name -> {"state", "result", "done_at", "reverted_at"}.
Step states: `done` (the effect committed with the record) and `reverted` (its compensation
committed with the update). A step is never recorded without its effect, nor the reverse.
Keeping the records on the flow row means the one `SELECT ... FOR UPDATE` that serialises a
flow's steps also returns their records, as of the latest commit.

"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class FlowState(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPENSATING = "compensating"
    REVERTED = "reverted"
    NEEDS_ATTENTION = "needs_attention"


TERMINAL_STATES = frozenset({FlowState.SUCCEEDED, FlowState.REVERTED, FlowState.NEEDS_ATTENTION})


class StepState(str, enum.Enum):
    DONE = "done"
    REVERTED = "reverted"


class FlowRun(Base):
    __tablename__ = "flow_runs"
    __table_args__ = (
        # Not progress_at: every step updates it, and an indexed column would make each of those
        # updates write every index of the table (migration 0003).
        Index("ix_flow_runs_state", "state"),
        # The flow log's pruning (tasks/retention.py) finds what is due without reading every finished
        # flow; only the final update of a flow writes it (that one changes `state`, indexed already).
        Index("ix_flow_runs_finished", "finished_at",
              postgresql_where=text("state IN ('succeeded', 'reverted')")),
        UniqueConstraint("project_id", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), default="create_volume")
    volume_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32), default=FlowState.RUNNING.value)
    request: Mapped[dict]
    caller: Mapped[dict | None]  # roles and is_admin of who submitted: enough to resume from the log
    error: Mapped[dict | None]
    steps: Mapped[dict] = mapped_column(default=dict)
    failed_step: Mapped[str | None] = mapped_column(String(64))
    root_task_id: Mapped[str | None] = mapped_column(String(36))
    compensation_attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    progress_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

