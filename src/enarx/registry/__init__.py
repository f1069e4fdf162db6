"""The embedded package registry: drawbridge's API over content-addressed blobs and SQLite or
PostgreSQL (docs/packages.md, "The embedded registry")."""
