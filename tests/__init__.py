"""The enarx test suite: a package, so helpers are imported as ``tests.<module>``."""
