"""Alembic migrations of the Polychrome database (applied by persistence.db.migrate)."""
