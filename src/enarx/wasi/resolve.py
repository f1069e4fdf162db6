"""Confined path resolution: the sandbox boundary of the filesystem.

A guest path is resolved one component at a time against host directory fds, the way
cap-std (and so wasmtime) does it:

* every intermediate component is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the
  fd of the directory before it, so the kernel never resolves more than one name and a
  directory swapped for a symlink mid-walk fails instead of escaping;
* ``..`` pops our own stack of fds (never opens the host's ``..``) and popping past the
  pre-open root is refused;
* symlinks are read with ``readlinkat`` and spliced into the remaining path by us, counted
  (more than 40 expansions is ``ELOOP``), and an absolute target is an escape;
* the result is a directory fd plus one final name that is never a symlink the caller
  asked to follow, so every operation ends in a single ``*at`` call with no-follow
  semantics (a race that swaps in a symlink after we looked gives ELOOP, not an escape).

Escapes answer ``EPERM`` like cap-std/wasmtime.
"""

from __future__ import annotations

import errno
import os

from enarx.wasi.abi import Errno, WasiError, from_oserror

__all__ = ["MAX_SYMLINK_EXPANSIONS", "PathWalk", "Resolved", "check_path", "resolve",
           "stays_inside"]

MAX_SYMLINK_EXPANSIONS = 40
_WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Resolved:
    """A directory fd and one final component (``.`` for the directory itself).

    ``must_dir`` is set when the guest path ended in ``/``. Use as a context manager: the
    walk's intermediate fds are closed on exit (the pre-open fd itself is borrowed).
    """

    __slots__ = ("_fds", "must_dir", "name")

    def __init__(self, fds: list[int], name: bytes, must_dir: bool) -> None:
        self._fds = fds
        self.name = name
        self.must_dir = must_dir

    @property
    def dirfd(self) -> int:
        return self._fds[-1]

    @property
    def depth(self) -> int:
        """How many directories below the pre-open root ``dirfd`` is (the walk's stack)."""
        return len(self._fds) - 1

    @property
    def name_slash(self) -> bytes:
        """The final name with the guest's trailing slash, for parent-only syscalls
        (mkdirat, unlinkat, renameat, symlinkat, linkat's new path) that never follow it."""
        return self.name + b"/" if self.must_dir else self.name

    def close(self) -> None:
        fds, self._fds = self._fds, self._fds[:1]
        for fd in fds[1:]:
            os.close(fd)

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_path(path: bytes) -> None:
    """Reject what no WASI path may contain (wasmtime: invalid UTF-8 is EILSEQ)."""
    if b"\0" in path:
        raise WasiError(Errno.INVAL)
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        raise WasiError(Errno.ILSEQ) from None


class PathWalk:
    """The part of a walk that does not depend on what is walked (host fds here, the
    encrypted tree in wasi/encfs.py): the guest path checked and split into ``todo``, a
    stack of components (the next one at the end), ``must_dir`` (the path, or the last
    symlink followed, ends in ``/``) and the symlink expansions so far."""

    __slots__ = ("expansions", "must_dir", "todo")

    def __init__(self, path: bytes) -> None:
        check_path(path)
        if not path:
            raise WasiError(Errno.NOENT)
        if path.startswith(b"/"):
            raise WasiError(Errno.PERM)
        self.must_dir = path.endswith(b"/")
        self.todo = [c for c in reversed(path.split(b"/")) if c]
        self.expansions = 0

    def count_expansion(self) -> None:
        """One more symlink followed: more than :data:`MAX_SYMLINK_EXPANSIONS` is ``ELOOP``."""
        self.expansions += 1
        if self.expansions > MAX_SYMLINK_EXPANSIONS:
            raise WasiError(Errno.LOOP)

    def splice(self, target: bytes, last: bool) -> None:
        """Walk on through the symlink ``target`` in place of the component just taken
        (``last``: it was the path's last one); an absolute target is an escape (``EPERM``)."""
        if target.startswith(b"/"):
            raise WasiError(Errno.PERM)
        if last and target.endswith(b"/"):
            self.must_dir = True
        self.todo.extend(c for c in reversed(target.split(b"/")) if c)


def stays_inside(depth: int, target: bytes) -> bool:
    """Whether the relative symlink ``target``, placed ``depth`` directories below the
    pre-open root, names something inside it when read lexically (as host tools read it:
    ``..`` of a directory is its parent). Symlinks inside the target were checked the same
    way when they were created."""
    for comp in target.split(b"/"):
        if comp == b"..":
            depth -= 1
            if depth < 0:
                return False
        elif comp and comp != b".":
            depth += 1
    return True


def resolve(root_fd: int, path: bytes, *, follow: bool) -> Resolved:
    """Resolve ``path`` under ``root_fd``; ``follow`` follows a symlink in the last component.

    Raises WasiError (ENOENT, ENOTDIR, ELOOP, EPERM for escapes, ...).
    """
    walk = PathWalk(path)
    todo = walk.todo  # a stack: next component at the end
    fds = [root_fd]
    try:
        while todo:
            comp = todo.pop()
            last = not todo
            if comp == b".":
                if last:
                    return Resolved(fds, b".", True)
                continue
            if comp == b"..":
                if len(fds) == 1:
                    raise WasiError(Errno.PERM)
                os.close(fds.pop())
                if last:
                    return Resolved(fds, b".", True)
                continue
            cur = fds[-1]
            if last and not follow:
                return Resolved(fds, comp, walk.must_dir)
            if last:
                target = _readlink(cur, comp)
                if target is None:
                    return Resolved(fds, comp, walk.must_dir)
            else:
                try:
                    fds.append(os.open(comp, _WALK_FLAGS, dir_fd=cur))
                    continue
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):  # maybe a symlink
                        raise from_oserror(e) from None
                target = _readlink(cur, comp)
                if target is None:
                    raise WasiError(Errno.NOTDIR)
            walk.count_expansion()
            if not target:
                raise WasiError(Errno.NOENT)
            walk.splice(target, last)
            if not todo:  # target was only slashes: treat as the directory itself
                return Resolved(fds, b".", True)
        return Resolved(fds, b".", True)
    except BaseException:
        for fd in fds[1:]:
            os.close(fd)
        raise


def _readlink(dirfd: int, name: bytes) -> bytes | None:
    """The symlink's target, or None when ``name`` is not a symlink (or does not exist)."""
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):  # not a symlink / the op will say so
            return None
        raise from_oserror(e) from None
