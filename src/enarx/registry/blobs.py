"""Content-addressed blob files: ``ROOT/sha256/<2 hex>/<64 hex>``, written atomically.

An upload streams into a temp file in ``ROOT/tmp`` while every digest is computed; only a body
that passed every check is fsynced and renamed to its content address (an existing blob with
the same address is kept: same address, same bytes). A failed or interrupted upload deletes
its temp file, so nothing partial is ever reachable; :meth:`BlobStore.remove_stale` (at
start-up) deletes what a crash left in ``tmp``. Files are 0600, directories 0700.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from enarx.fsutil import ensure_private_dir
from enarx.registry.entry import MultiHasher

__all__ = ["BlobStore", "BodyTooLarge", "Upload"]

CHUNK = 1 << 16
#: Temp files untouched this long are left-overs of a crash.
STALE_AFTER = 3600.0


class BodyTooLarge(Exception):
    """The body went past the allowed size."""


class Upload:
    """A received body in a temp file, with its digests; :meth:`discard` unless committed."""

    def __init__(self, path: Path, hasher: MultiHasher) -> None:
        self.path = path
        self.length = hasher.length
        self.digests = hasher.digests()
        self.sha256 = self.digests["sha-256"].hex()

    def read(self, limit: int) -> bytes:
        with open(self.path, "rb") as f:
            return f.read(limit)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = ensure_private_dir(Path(root))
        self.tmp = ensure_private_dir(self.root / "tmp")
        ensure_private_dir(self.root / "sha256")

    def remove_stale(self, older_than: float = STALE_AFTER) -> int:
        """Delete temp files a crash left behind (never referenced by any row). Only old
        ones: another registry process sharing this directory may be mid-upload."""
        removed = 0
        cutoff = time.time() - older_than
        for stale in self.tmp.glob("upload-*"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()
                    removed += 1
        return removed

    def path(self, sha256_hex: str) -> Path:
        return self.root / "sha256" / sha256_hex[:2] / sha256_hex

    async def receive(self, stream: AsyncIterator[bytes], max_length: int,
                      algorithms: Iterable[str] = ()) -> Upload:
        """Stream a body to a temp file, computing SHA-256 (its address) and ``algorithms``;
        BodyTooLarge past ``max_length`` (temp removed)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        path = Path(name)
        hasher = MultiHasher({"sha-256", *algorithms})
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in stream:
                    if not chunk:
                        continue
                    if hasher.length + len(chunk) > max_length:
                        raise BodyTooLarge
                    hasher.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return Upload(path, hasher)

    def commit(self, upload: Upload) -> str:
        """Move the upload to its content address; returns the SHA-256 hex."""
        target = self.path(upload.sha256)
        ensure_private_dir(target.parent)
        if target.exists():
            upload.discard()
            # fresh again: garbage collection spares blobs touched within the grace period,
            # so this one cannot vanish before the node row that uses it is written
            os.utime(target)
            return upload.sha256
        os.replace(upload.path, target)
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return upload.sha256

    def all_blobs(self) -> Iterator[tuple[str, Path]]:
        """(sha-256 hex, path) of every stored blob."""
        for sub in sorted((self.root / "sha256").iterdir()):
            if sub.is_dir():
                for path in sorted(sub.iterdir()):
                    yield path.name, path

    def iter_file(self, sha256_hex: str) -> Iterator[bytes]:
        with open(self.path(sha256_hex), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def read(self, sha256_hex: str, limit: int) -> bytes:
        with open(self.path(sha256_hex), "rb") as f:
            return f.read(limit)
