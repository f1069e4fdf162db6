"""``file://`` packages: read a package directory (or one ``.wasm`` file) and write a
package directory atomically.

:func:`write_package` is also what every fetch uses for ``--out DIR``: files are streamed
into a private temp directory next to DIR, every file is checked against its entry while it
is written, and only a complete, verified package is renamed to DIR. On any failure (digest
mismatch, disk full, Ctrl-C) the temp directory is removed and DIR is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from enarx.errors import ResourceError
from enarx.package.errors import PackageError
from enarx.package.tree import (
    CHUNK,
    Entry,
    Tree,
    hash_file,
    open_regular,
    scan,
    split_path,
    walk_files,
)

__all__ = ["LocalPackage", "load_files", "read_package", "write_package"]

Reader = Callable[[str, Entry], Iterable[bytes]]


@dataclass(frozen=True)
class LocalPackage:
    """A package on disk: its tree and, per tree path, the file holding the bytes; ``data``
    holds the bytes of the files kept in memory when they were hashed
    (:func:`read_package` ``keep_max``)."""

    tree: Tree
    sources: Mapping[str, str | os.PathLike[str]]
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def chunks(self, path: str, entry: Entry | None = None) -> Iterator[bytes]:
        """The bytes of ``path``, verified against its entry as they stream: the last
        iteration raises DigestMismatch if the file changed since it was hashed (the host
        owns the disk), so a consumer must discard what it got when iteration fails.

        A file kept in memory is yielded as is: those are the bytes its tree entry was
        computed from, read once and hashed once (nobody can have changed them since)."""
        own = self.tree.files.get(path)
        entry = entry or own or self.tree.entry_at(path)
        kept = self.data.get(path)
        if kept is not None and entry == own:
            yield kept
            return
        verifier = entry.verifier(path=path)
        source = self.sources.get(path)
        if source is None:
            raise PackageError("no such file in the package", path=path)
        try:
            # the host may have swapped the file for a link or a FIFO since it was hashed
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            raise PackageError(f"cannot read: {e.strerror}", path=path) from None
        with os.fdopen(fd, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PackageError("is no longer a regular file", path=path)
            while chunk := f.read(CHUNK):
                verifier.update(chunk)
                yield chunk
        verifier.finish()

    def read(self, path: str) -> bytes:
        """The whole of ``path``, verified (DigestMismatch if it changed since hashing)."""
        return b"".join(self.chunks(path))


def read_package(path: Path, *, check: bool = True,
                 progress: Callable[[int], None] | None = None,
                 keep_max: int = 0) -> LocalPackage:
    """Hash the package at ``path``: a directory, or a single ``.wasm`` file (then the
    package is just ``main.wasm``, as upstream's ``file://`` deploy accepted). With ``check``
    the tree must be a runnable package (``main.wasm`` at the root). Up to ``keep_max``
    bytes of files are kept in memory as they are hashed (:attr:`LocalPackage.data`), so
    reading them back costs neither I/O nor hashing."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise PackageError(f"cannot read the package {path}: {e.strerror}",
                           hint="give a package directory (with main.wasm) or a .wasm file"
                           ) from None
    if stat.S_ISREG(st.st_mode):
        kept: list[bytes] = []
        tree = Tree.from_files({"main.wasm": hash_file(path, "application/wasm",
                                                       progress=progress, keep=kept,
                                                       keep_max=keep_max)})
        return LocalPackage(tree, {"main.wasm": path}, {"main.wasm": kept[0]} if kept else {})
    data: dict[str, bytes] = {}
    files = dict(scan(path, progress=progress, keep=data, keep_max=keep_max))
    tree = Tree.from_files(files)
    if check:
        tree.check_package()
    root = os.fspath(path)  # plain strings: 1 500 Path objects cost more than the hashing
    return LocalPackage(tree, {p: os.path.join(root, p) for p in files}, data)


def load_files(path: Path, *, max_file: int) -> dict[str, bytes]:
    """Every file of the package directory ``path`` in memory (package path -> bytes), read
    once and not hashed, with the checks of :func:`read_package` (names, no links or special
    files, no empty directories, the file and depth limits).

    Only where hashing would check nothing (the tree of a local directory is made from these
    same bytes): for a reader that authenticates them by other means, such as an encrypted
    package, whose every chunk carries an AES-GCM tag and whose plaintext identity is
    recomputed (:func:`enarx.package.crypt.decrypt_package`), or where nothing attests the
    package's identity (enarx.keep.deploy). A file that grows while it is read is refused."""
    out: dict[str, bytes] = {}
    for name, fs_path in walk_files(Path(path)):
        f, st = open_regular(fs_path)
        with f:
            if st.st_size > max_file:
                raise PackageError(f"larger than {max_file} bytes", path=name)
            data = f.read(st.st_size + 1)  # all of it, in one read(2) as a rule
            while len(data) < st.st_size:  # a short read: on to the end
                more = f.read(st.st_size + 1 - len(data))
                if not more:
                    break
                data += more
            if len(data) > st.st_size:
                raise PackageError("changed while it was read", path=name,
                                   hint="deploy a package directory nothing else writes to")
        out[name] = data
    return out


def write_package(dest: Path, tree: Tree, read: Reader, *, replace: bool = False,
                  progress: Callable[[int], None] | None = None) -> None:
    """Write every file of ``tree`` below the new directory ``dest``, atomically.

    ``read(path, entry)`` yields the file's bytes (from a registry, a decryptor, a local
    package); each file is verified against its entry while streaming. ``dest`` must not
    exist unless ``replace`` (then an existing directory is swapped out only after the new
    one is complete). The new directory is 0700 (a package may hold private data)."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not (replace and dest.is_dir())):
        raise PackageError(f"{dest} already exists",
                           hint="choose a new --out directory, or remove the old one")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".partial"))
    except OSError as e:
        raise _write_error(dest, e) from None
    try:
        _fill(tmp, tree, read, progress)
        _swap(tmp, dest, replace)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(dest, exc) from None
        raise
    _fsync_dir(parent)


def _fill(tmp: Path, tree: Tree, read: Reader,
          progress: Callable[[int], None] | None) -> None:
    dirs = [tmp]
    for path, entry in tree.walk():
        target = tmp.joinpath(*split_path(path))  # re-validated: nothing escapes tmp
        if entry.is_directory:
            target.mkdir(mode=0o700)
            dirs.append(target)
            continue
        verifier = entry.verifier(path=path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as f:
            for chunk in read(path, entry):
                verifier.update(chunk)
                f.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            verifier.finish()
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o644)
    for d in reversed(dirs):
        _fsync_dir(d)


def _swap(tmp: Path, dest: Path, replace: bool) -> None:
    if not replace:
        # rename(2) onto an existing non-empty directory fails, onto an empty one replaces
        # it: refuse both, the caller asked for a new directory.
        if dest.exists() or dest.is_symlink():
            raise PackageError(f"{dest} appeared while the package was written",
                               hint="choose a new --out directory")
        os.rename(tmp, dest)
        return
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
        os.rename(dest, old / "d")
    try:
        os.rename(tmp, dest)
    except BaseException:
        if old is not None:
            os.rename(old / "d", dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_error(dest: Path, e: OSError) -> ResourceError:
    hint = None
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some disk space (or choose --out on another file system) and retry"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose an --out directory you can write to"
    return ResourceError(f"cannot write the package to {dest}: {e.strerror or e}", hint=hint)
