"""What routing rules decided for a job (destinations, rules, input series), and the studies
waiting for series a rule requires.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAIT_STATUSES = ("waiting", "queued", "skipped", "forced")


def upgrade() -> None:
    # Added columns only: SQLite cannot alter the jobs table otherwise without recreating it,
    # which would cascade into the deliveries that reference it.
    op.add_column("jobs", sa.Column("destinations", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("rules", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("series_instance_uid", sa.String(length=64), nullable=True))

    op.create_table(
        "study_waits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("orthanc_study_id", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *WAIT_STATUSES,
                name=op.f("ck_study_waits_wait_status"),
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        # the required series still missing, and what happened at the end
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("first_stable_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_waits")),
        sa.UniqueConstraint("orthanc_study_id", "rule", name="uq_study_waits_study_rule"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_study_waits_due", "study_waits", ["status", "deadline"])


def downgrade() -> None:
    op.drop_index("ix_study_waits_due", table_name="study_waits")
    op.drop_table("study_waits")
    op.drop_column("jobs", "series_instance_uid")
    op.drop_column("jobs", "rules")
    op.drop_column("jobs", "destinations")
