"""Fixtures shared by the steward tests (tests/steward/pg.py: a real PostgreSQL server)."""

from tests.steward.pg import pg_url, postgres

__all__ = ["pg_url", "postgres"]
