"""Whole-tree conversion for owners: plaintext directory <-> encrypted directory.

Both directions stream file contents in 1 MiB pieces, report progress as ``progress(n)``
with the number of plaintext bytes just processed (a delta; the total is the sum of the
plaintext file sizes), and build the output in a hidden temporary directory next to ``dst``
that is renamed into place only when complete: ``dst`` (absent or an empty directory) is
either untouched or whole, never half-written. Encrypting converts regular files and
directories only: a symlink, device or socket in the source is refused (:class:`EncDirFsError`,
ENOTSUP). Decrypting writes the tree's symlinks (made by a guest) as relative host symlinks;
their progress counts the target's length, as ``lookup(link).size`` does. Hard links are
kept both ways: names of one source file become names of one encrypted file and back (a
further name adds no progress: its bytes were counted once).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as st
from collections.abc import Callable

from enarx.encdir.encdir import EncDir
from enarx.encdir.errors import EncDirError, EncDirFsError
from enarx.wasi.resolve import stays_inside

__all__ = ["Progress", "decrypt_tree", "encrypt_tree"]

Progress = Callable[[int], None]
_CHUNK = 1 << 20


def _staging(dst: str) -> str:
    if os.path.lexists(dst) and (not os.path.isdir(dst) or os.path.islink(dst)
                                 or os.listdir(dst)):
        raise EncDirFsError(errno.EEXIST, f"{dst} already exists and is not an empty directory",
                            hint="choose an output path that does not exist yet")
    parent = os.path.dirname(os.path.abspath(dst)) or "."
    if not os.path.isdir(parent):
        raise EncDirFsError(errno.ENOENT, f"{parent} is not a directory")
    return os.path.join(parent, f".{os.path.basename(dst)}.{os.urandom(6).hex()}.partial")


def _finish(tmp: str, dst: str) -> None:
    try:
        os.rename(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_Files = list[tuple[str, int, object]]


def _plain_walk(src: str) -> tuple[list[str], _Files]:
    """Directories and (file, size, hard-link key or None) of a plaintext tree, relative,
    parents first."""
    if not os.path.isdir(src):
        raise EncDirFsError(errno.ENOTDIR, f"{src} is not a directory")
    dirs: list[str] = []
    files: _Files = []

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(src, rel) if rel else src) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            path = os.path.join(rel, e.name) if rel else e.name
            s = e.stat(follow_symlinks=False)
            if st.S_ISDIR(s.st_mode):
                dirs.append(path)
                walk(path)
            elif st.S_ISREG(s.st_mode):
                files.append((path, s.st_size,
                              (s.st_dev, s.st_ino) if s.st_nlink > 1 else None))
            else:
                raise EncDirFsError(errno.ENOTSUP, f"{os.path.join(src, path)} is not a "
                                    "regular file or directory (symlinks are not supported)")

    walk("")
    return dirs, files


def _typed(fn: Callable[[], None]) -> None:
    """Run ``fn``; a host I/O failure becomes :class:`EncDirFsError` (a typed error the CLI
    prints as ``error:``/``hint:``, never a traceback)."""
    try:
        fn()
    except EncDirError:
        raise
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        raise EncDirFsError(e.errno or errno.EIO, f"{where}{e.strerror or e}",
                            hint="check the paths, their permissions and free space") from None


def encrypt_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: bytes,
                 progress: Progress | None = None) -> None:
    """Encrypt the plaintext tree ``src`` into the new encrypted directory ``dst``."""
    _typed(lambda: _encrypt_tree(os.fspath(src), os.fspath(dst), key, progress))


def _encrypt_tree(src: str, dst: str, key: bytes, progress: Progress | None) -> None:
    dirs, files = _plain_walk(src)
    tmp = _staging(dst)
    try:
        enc = EncDir.create(tmp, key)
        try:
            for d in dirs:
                enc.mkdir(d)
            named: dict[object, str] = {}
            for rel, _, same in files:
                if same is not None and same in named:  # a further name of a file done
                    enc.link(named[same], rel)
                    continue
                named[same] = rel
                path = os.path.join(src, rel)
                with open(path, "rb") as inp, enc.open_file(rel, create=True, excl=True) as out:
                    off = 0
                    while chunk := inp.read(_CHUNK):
                        out.pwrite(chunk, off)
                        off += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    out.sync()
                    s = os.fstat(inp.fileno())
                    out.set_times(s.st_atime_ns, s.st_mtime_ns)
            for d in reversed(dirs):  # after their contents, which change a dir's mtime
                s = os.stat(os.path.join(src, d))
                enc.set_times(d, s.st_atime_ns, s.st_mtime_ns)
        finally:
            enc.close()
        _finish(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _enc_walk(enc: EncDir) -> tuple[list[str], _Files, list[str]]:
    dirs: list[str] = []
    files: _Files = []
    links: list[str] = []

    def walk(rel: str) -> None:
        for name, kind in enc.listdir(rel):
            path = (rel + "/" if rel else "") + name.decode("utf-8", "surrogateescape")
            if kind == "dir":
                dirs.append(path)
                walk(path)
            elif kind == "symlink":
                links.append(path)
            else:
                node = enc.lookup(path)
                files.append((path, node.size, node.ino if node.nlink > 1 else None))

    walk("")
    return dirs, files, links


def decrypt_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: bytes,
                 progress: Progress | None = None) -> None:
    """Decrypt the encrypted directory ``src`` into a new plaintext tree ``dst`` (files
    0600, directories 0700: the plaintext is the owner's secret). Any authentication failure
    aborts with :class:`EncDirCorrupt` and leaves no ``dst``."""
    _typed(lambda: _decrypt_tree(os.fspath(src), os.fspath(dst), key, progress))


def _decrypt_tree(src: str, dst: str, key: bytes, progress: Progress | None) -> None:
    enc = EncDir.open(src, key, readonly=True)
    try:
        dirs, files, links = _enc_walk(enc)
        tmp = _staging(dst)
        try:
            os.mkdir(tmp, 0o700)
            for d in dirs:
                os.mkdir(os.path.join(tmp, d), 0o700)
            named: dict[object, str] = {}
            for rel, _, same in files:
                out_path = os.path.join(tmp, rel)
                if same is not None and same in named:  # a further name of a file done
                    os.link(named[same], out_path)
                    continue
                named[same] = out_path
                fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out, enc.open_file(rel) as inp:
                    off = 0
                    while chunk := inp.pread(_CHUNK, off):
                        out.write(chunk)
                        off += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    node = inp.stat()
                os.utime(out_path, ns=(node.atime_ns, node.mtime_ns))
            for rel in links:
                target = enc.readlink(rel)
                # host tools would follow a link out of the tree
                if target.startswith(b"/") or not stays_inside(rel.count("/"), target):
                    raise EncDirFsError(errno.EPERM, f"symlink {rel} points outside the tree",
                                        hint="remove that link inside a Keep, then decrypt")
                os.symlink(target, os.path.join(tmp, rel).encode("utf-8", "surrogateescape"))
                if progress is not None:
                    progress(len(target))
            for d in reversed(dirs):
                node = enc.lookup(d)
                os.utime(os.path.join(tmp, d), ns=(node.atime_ns, node.mtime_ns))
            _finish(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        enc.close()
