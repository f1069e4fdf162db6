from tests.steward.pg import pg_url, postgres

__all__ = ["pg_url", "postgres"]
