"""Locate the real-hardware attestation vectors (used by the SNP and DCAP tests).

They are vendored in ``tests/data/vectors`` (each vector with the ``SOURCE.md`` that names its
origin and licence); ``ENARX_VECTORS`` points the tests at another copy instead. Absent vectors
skip the tests with a clear reason, except under CI (``CI`` set), where they fail: a CI run
that silently verified nothing would be a lie.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "MISSING", "VENDORED", "all_vectors", "load_manifest", "location", "vector_dir",
    "vectors_dir",
]

MISSING = "<vectors missing>"
VENDORED = Path(__file__).resolve().parent / "data" / "vectors"


def location() -> Path:
    """Where the vectors are looked for: ``$ENARX_VECTORS`` if set, else the vendored copy."""
    env = os.environ.get("ENARX_VECTORS")
    return Path(env) if env else VENDORED


def vectors_dir() -> Path:
    """The vectors folder; skips (or fails under CI) the calling test when it is absent."""
    path = location()
    if not path.is_dir():
        reason = (f"attestation vectors not found at {path} (the repository ships them in "
                  f"{VENDORED}; unset ENARX_VECTORS or point it at a copy)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def vector_dir(kind: str, name: str) -> Path:
    return vectors_dir() / kind / name


def load_manifest(kind: str, name: str) -> dict[str, Any]:
    """``<kind>/<name>/manifest.json`` with ``_dir`` set to the vector's folder."""
    folder = vector_dir(kind, name)
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    manifest["_dir"] = folder
    return manifest


def all_vectors(kind: str) -> list[str]:
    """Names of every vector of ``kind``, for ``parametrize``. When the folder is absent it
    returns one placeholder so the test runs and skips (or fails under CI) with the reason."""
    folder = location() / kind
    if not folder.is_dir():
        return [MISSING]
    return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file())
