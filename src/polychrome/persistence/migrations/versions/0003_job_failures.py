"""Job failures: worker deaths a job caused, apart from the claims it took.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- jobs.failures counts the times a job's worker died while the rest of the service stayed
  up (its supervisor saw it die, or another worker that was running before kept running);
  the give-up limit applies to it. `attempts` still counts every claim, so a job that
  survives ten crashes of the whole service is not failed for them. Existing jobs start
  at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("failures")
