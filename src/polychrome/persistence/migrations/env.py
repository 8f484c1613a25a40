"""Alembic environment: migrations run on the connection persistence.db.migrate hands over.

There is no alembic.ini: `polychrome.persistence.db.migrate` builds the configuration in
code and passes an open connection, so the same process that opens the database upgrades
it (inside its cross-process lock).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only persistence.db.migrate runs these
    raise RuntimeError("run migrations through polychrome.persistence.db.migrate")

context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
