"""The engine: compile (with an on-disk cache), limit, instantiate and run a module."""
