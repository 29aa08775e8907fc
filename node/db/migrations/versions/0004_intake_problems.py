"""Studies the change follower could not route, set aside so that later studies are routed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("retrying", "failed")


def upgrade() -> None:
    op.create_table(
        "intake_problems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("orthanc_study_id", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *STATUSES,
                name=op.f("ck_intake_problems_intake_problem_status"),
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_problems")),
        sa.UniqueConstraint("orthanc_study_id", name=op.f("uq_intake_problems_orthanc_study_id")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_intake_problems_due", "intake_problems", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_intake_problems_due", table_name="intake_problems")
    op.drop_table("intake_problems")
