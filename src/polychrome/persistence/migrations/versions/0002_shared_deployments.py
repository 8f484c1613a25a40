"""Shared deployments: 64-bit seeds, installation-independent bundled model paths.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

- gallery_images.seed becomes BIGINT: seeds go up to 2**63 - 1, which SQLite's INTEGER
  holds but PostgreSQL's does not.
- Bundled models were indexed by the absolute path of the installation that registered
  them; machines sharing one database install the package in different places. Their path
  is now `bundled:<directory name>`, resolved against each machine's own installation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gallery_images") as batch:
        batch.alter_column("seed", type_=sa.BigInteger(), existing_type=sa.Integer(),
                           existing_nullable=True)
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, path FROM model_versions WHERE bundled = 1")).all()
    for row_id, path in rows:
        if path.startswith("bundled:"):
            continue
        name = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        conn.execute(sa.text("UPDATE model_versions SET path = :p WHERE id = :i"),
                     {"p": f"bundled:{name}", "i": row_id})


def downgrade() -> None:
    with op.batch_alter_table("gallery_images") as batch:
        batch.alter_column("seed", type_=sa.Integer(), existing_type=sa.BigInteger(),
                           existing_nullable=True)
