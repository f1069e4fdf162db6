"""Garbage collection of unfinished uploads and unused blobs (``enarx registry gc``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from enarx.registry.db import NodeRow
from enarx.registry.gc import collect
from enarx.registry.server import open_registry
from tests.cliutil import ENARX


def _blob(blobs: object, data: bytes, age: float) -> str:
    import hashlib

    name = hashlib.sha256(data).hexdigest()
    path = blobs.path(name)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (time.time() - age, time.time() - age))
    return name


def test_collect(tmp_path: Path) -> None:
    db, blobs = open_registry(tmp_path / "reg", None)
    try:
        used = _blob(blobs, b"used", 7200)
        orphan_old = _blob(blobs, b"orphan-old", 7200)
        orphan_new = _blob(blobs, b"orphan-new", 10)
        pending = _blob(blobs, b"pending", 7200)
        # a complete tag using `used`, an old pending tag using `pending`
        db.put_tag("u", "r", "1.0.0", b"A", "t", "{}")
        gen = db.get_tag("u", "r", "1.0.0").generation
        db.put_node("u", "r", "1.0.0", "", gen, NodeRow(used, 4, "t", "{}"), 0)
        db.put_tag("u", "r", "2.0.0", b"B", "t", "{}")
        gen2 = db.get_tag("u", "r", "2.0.0").generation
        db.put_node("u", "r", "2.0.0", "", gen2, NodeRow(pending, 7, "t", "{}"), 1)
        report = collect(db, blobs, now=time.time() + 2 * 86400)
        assert report.pending_tags == ["u/r:2.0.0"]
        assert db.get_tag("u", "r", "2.0.0") is None and db.list_tags("u", "r") == ["1.0.0"]
        # `now` is two days ahead: every unreferenced blob is past the grace period
        assert report.blobs == 3
        assert blobs.path(used).exists()
        for gone in (orphan_old, orphan_new, pending):
            assert not blobs.path(gone).exists()
    finally:
        db.close()


def test_gc_command_spares_fresh_blobs(tmp_path: Path) -> None:
    db, blobs = open_registry(tmp_path / "reg", None)
    old = _blob(blobs, b"old", 7200)
    fresh = _blob(blobs, b"fresh", 5)
    db.put_tag("u", "r", "1.0.0", b"A", "t", "{}")  # pending, but young
    db.close()
    out = subprocess.run([str(ENARX), "registry", "gc", "--state-dir", str(tmp_path / "reg")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"deleted 1 unused blob(s), 3 bytes" in out.stderr
    assert not blobs.path(old).exists() and blobs.path(fresh).exists()
    db, _ = open_registry(tmp_path / "reg", None)
    try:
        assert db.get_tag("u", "r", "1.0.0") is not None
    finally:
        db.close()


def test_reused_blob_is_refreshed_at_commit(tmp_path: Path) -> None:
    import asyncio

    db, blobs = open_registry(tmp_path / "reg", None)
    db.close()
    name = _blob(blobs, b"same bytes", 7200)

    async def one() -> object:
        async def stream():  # type: ignore[no-untyped-def]
            yield b"same bytes"

        return await blobs.receive(stream(), 100)

    upload = asyncio.run(one())
    assert blobs.commit(upload) == name  # type: ignore[arg-type]
    assert time.time() - blobs.path(name).stat().st_mtime < 60
