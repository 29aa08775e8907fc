"""Alembic migrations of the job database; run them with :func:`node.db.migrate`."""
