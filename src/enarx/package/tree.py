"""The package tree: drawbridge entries and directories forming a Merkle tree.

An *entry* commits to some bytes::

    {"digest": {"sha-256": B64, "sha-384": B64}, "length": N, "type": MEDIA_TYPE}

(standard base64 with padding; the algorithms are RFC 9530's ``sha-224``/``sha-256``/
``sha-384``/``sha-512``). A *directory* is a JSON object mapping names to entries, serialised
with JCS (RFC 8785) and typed :data:`DIRECTORY_TYPE`; a sub-directory is an entry over its
own directory bytes, so the root directory's entry commits to every byte of the package.
The **package identity** is ``"sha384:" + hex(SHA-384(root directory bytes))``: the
workload identity a deployed Keep attests (docs/packages.md). The root directory is a JSON
object (its first byte is ``{``), so it can never collide with a module's workload identity
(whose hashed message starts ``enarx-workload-v1``).

Directories we accept are exactly JCS of their parsed value (no duplicate keys, no floats,
no unknown fields), so two parsers can never read different trees from the same bytes.

Everything here is pure except :meth:`Tree.build` and :func:`hash_file`, which only read.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from enarx.package import jcs
from enarx.package.digest import (
    ALGORITHMS,
    STRONG_ALGORITHMS,
    TREE_ALGORITHMS,
    DigestVerifier,
    b64,
    decode_digest,
    digest_of,
    format_content_digest,
    new_hashers,
    parse_content_digest,
)
from enarx.package.errors import PackageError

__all__ = [
    "ALGORITHMS",
    "CHUNK",
    "DIRECTORY_TYPE",
    "ENTRY_TYPE",
    "MAX_DEPTH",
    "MAX_DIRECTORY_BYTES",
    "MAX_FILES",
    "MAX_TOML_BYTES",
    "TREE_ALGORITHMS",
    "DigestVerifier",
    "Directory",
    "Entry",
    "Tree",
    "check_name",
    "format_content_digest",
    "hash_bytes",
    "hash_file",
    "identity_of_files",
    "media_type",
    "open_regular",
    "package_identity",
    "parse_content_digest",
    "scan",
    "split_path",
    "walk_files",
]

DIRECTORY_TYPE = "application/vnd.drawbridge.directory.v1+json"
#: Media type of a tag whose body is an unsigned entry (drawbridge).
ENTRY_TYPE = "application/vnd.drawbridge.entry.v1+json"

CHUNK = 1 << 20
MAX_FILES = 10_000
MAX_DEPTH = 32
MAX_DIRECTORY_BYTES = 1 << 20
MAX_TOML_BYTES = 1 << 20
_MAX_LENGTH = (1 << 53) - 1  # the I-JSON / JCS integer range
_MAX_PATH = 4096

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")
_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_NAME_HINT = ("names are 1-255 of A-Z a-z 0-9 . _ + - and do not start with '.', '+' or '-'; "
              "rename the file or leave it out of the package directory")

#: File name suffix -> media type. A fixed table (never the system's mime database), so the
#: same directory gives the same tree on every machine.
_TYPES = {
    ".wasm": "application/wasm",
    ".toml": "application/toml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".csv": "text/csv",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".pem": "application/x-pem-file",
    ".tar": "application/x-tar",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}


def media_type(name: str) -> str:
    """The media type a file named ``name`` gets in a tree (fixed table, lower-case suffix;
    ``application/octet-stream`` otherwise)."""
    _, dot, suffix = name.rpartition(".")
    if not dot or not _:
        return "application/octet-stream"
    return _TYPES.get("." + suffix.lower(), "application/octet-stream")


def check_name(name: str, *, where: str | None = None) -> str:
    """``name`` if it is an allowed directory-entry name, else :class:`PackageError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = name[:60] + "..." if isinstance(name, str) and len(name) > 60 else name
        raise PackageError(f"invalid name {shown!r}", path=where, hint=_NAME_HINT)
    return name


def split_path(path: str) -> list[str]:
    """The names of a package path ``"a/b/c"`` (validated; no ``.``/``..``/empty parts)."""
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH:
        raise PackageError(f"invalid path {path!r}", hint=_NAME_HINT)
    parts = path.split("/")
    for p in parts:
        check_name(p, where=path)
    if len(parts) > MAX_DEPTH:
        raise PackageError(f"nested deeper than {MAX_DEPTH} directories", path=path)
    return parts


# --- digests -------------------------------------------------------------------------------


def hash_bytes(data: bytes | bytearray | memoryview, media: str) -> Entry:
    """The entry (with :data:`TREE_ALGORITHMS`) of ``data`` typed ``media``."""
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    return Entry({a: digest_of(data, a) for a in TREE_ALGORITHMS}, size, media)


def open_regular(path: str | os.PathLike[str]) -> tuple[io.FileIO, os.stat_result]:
    """``path`` opened for reading (unbuffered) if it is a regular file, and its ``fstat``.
    Refuses symlinks and special files (``O_NOFOLLOW`` and ``fstat`` on the open file, so a
    swap after listing fails)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise PackageError(f"cannot read {path}: {e.strerror}",
                           hint="package files must be regular files you can read "
                           "(symbolic links are refused)") from None
    f = io.FileIO(fd, "rb", closefd=True)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise PackageError(f"{path} is not a regular file",
                           hint="a package holds regular files and directories only")
    return f, st


def hash_file(path: str | os.PathLike[str], media: str, *,
              progress: Callable[[int], None] | None = None,
              keep: list[bytes] | None = None, keep_max: int = 0) -> Entry:
    """Stream the regular file ``path`` into an entry (:func:`open_regular`'s checks).

    With ``keep``, a file of at most ``keep_max`` bytes is also appended to ``keep``: the
    very bytes that were hashed, so a reader needs neither a second read nor a second hash
    (and the host cannot change them afterwards)."""
    f, st = open_regular(path)
    with f:
        hashers = new_hashers(TREE_ALGORITHMS)
        length = 0
        parts: list[bytes] | None = [] if keep is not None else None
        size = CHUNK  # keeping: the whole file in one read (no join copy)
        if parts is not None and st.st_size <= keep_max:
            size = max(CHUNK, st.st_size + 1)
        while chunk := f.read(size):
            size = CHUNK
            for h in hashers.values():
                h.update(chunk)
            length += len(chunk)
            if parts is not None and length <= keep_max:
                parts.append(chunk)
            else:
                parts = None
            if progress is not None:
                progress(len(chunk))
    if keep is not None and parts is not None:
        keep.append(parts[0] if len(parts) == 1 else b"".join(parts))
    return Entry({a: h.digest() for a, h in hashers.items()}, length, media)


# --- entries and directories ---------------------------------------------------------------


def _loads(raw: bytes, what: str, where: str | None) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise PackageError(f"{what} repeats the key {k[:60]!r}", path=where)
            out[k] = v
        return out

    def bad(token: str) -> Any:
        raise PackageError(f"{what} holds the non-JSON number {token}", path=where)

    try:
        return json.loads(bytes(raw).decode("utf-8"), object_pairs_hook=pairs,
                          parse_constant=bad, parse_float=lambda s: bad(s))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError(f"{what} is not JSON: {e}", path=where) from None
    except RecursionError:
        raise PackageError(f"{what} is nested too deeply", path=where) from None


def _canonical(value: Any, raw: bytes, what: str, where: str | None) -> None:
    if jcs.dumps(value) != bytes(raw):
        raise PackageError(f"{what} is not in canonical JSON (RFC 8785) form", path=where,
                           hint="serialize with JCS: sorted keys, no spaces, no floats")


@dataclass(frozen=True)
class Entry:
    """Digests (algorithm -> raw bytes), length and media type of some content."""

    digest: Mapping[str, bytes]
    length: int
    type: str

    @property
    def is_directory(self) -> bool:
        return self.type == DIRECTORY_TYPE

    def to_json(self) -> dict[str, Any]:
        return {"digest": {a: b64(d) for a, d in sorted(self.digest.items())},
                "length": self.length, "type": self.type}

    def to_bytes(self) -> bytes:
        """JCS bytes of the entry (an unsigned drawbridge tag body, :data:`ENTRY_TYPE`)."""
        return jcs.dumps(self.to_json())

    def content_digest(self) -> str:
        return format_content_digest(self.digest)

    def verifier(self, *, path: str | None = None) -> DigestVerifier:
        return DigestVerifier.for_entry(self, path=path)

    def sha384_hex(self) -> str:
        d = self.digest.get("sha-384")
        if d is None:
            raise PackageError("the entry has no sha-384 digest",
                               hint="publish the package with a client that writes sha-384")
        return d.hex()

    def matches(self, other: Entry) -> bool:
        """Same length and type, and every algorithm both carry agrees (constant time), with
        at least one strong algorithm in common."""
        common = set(self.digest) & set(other.digest)
        if self.length != other.length or self.type != other.type \
                or not common & set(STRONG_ALGORITHMS):
            return False
        ok = True
        for a in sorted(common):
            ok &= hmac.compare_digest(self.digest[a], other.digest[a])
        return ok

    @classmethod
    def from_json(cls, obj: Any, *, where: str | None = None) -> Entry:
        if not isinstance(obj, dict) or set(obj) != {"digest", "length", "type"}:
            raise PackageError('an entry is {"digest", "length", "type"} and nothing else',
                               path=where)
        digests, length, media = obj["digest"], obj["length"], obj["type"]
        if not isinstance(digests, dict) or not digests:
            raise PackageError("entry digest is not a non-empty object", path=where)
        parsed: dict[str, bytes] = {}
        for alg, value in digests.items():
            if alg not in ALGORITHMS or not isinstance(value, str):
                raise PackageError(f"unsupported digest algorithm {alg[:40]!r}", path=where,
                                   hint="entries use sha-224, sha-256, sha-384 or sha-512")
            parsed[alg] = decode_digest(value, alg, ALGORITHMS[alg][1], where)
        if not set(parsed) & set(STRONG_ALGORITHMS):
            raise PackageError("entry has no sha-256, sha-384 or sha-512 digest", path=where)
        if type(length) is not int or not 0 <= length <= _MAX_LENGTH:
            raise PackageError("entry length is not a non-negative integer", path=where)
        if not isinstance(media, str) or not _TYPE_RE.fullmatch(media):
            raise PackageError(f"entry type {str(media)[:80]!r} is not a media type",
                               path=where)
        return cls(parsed, length, media)

    @classmethod
    def parse(cls, raw: bytes, *, where: str | None = None) -> Entry:
        """An entry from its canonical JSON bytes (e.g. an unsigned tag body)."""
        if len(raw) > 4096:
            raise PackageError("entry document is too large", path=where)
        value = _loads(raw, "entry", where)
        entry = cls.from_json(value, where=where)
        _canonical(value, raw, "entry", where)
        return entry


@dataclass(frozen=True)
class Directory:
    """Name -> entry; its bytes are the JCS serialisation (sorted names)."""

    entries: Mapping[str, Entry]

    def to_json(self) -> dict[str, Any]:
        return {n: e.to_json() for n, e in sorted(self.entries.items())}

    def to_bytes(self) -> bytes:
        return jcs.dumps(self.to_json())

    def entry(self) -> Entry:
        """The entry committing to this directory's bytes."""
        return hash_bytes(self.to_bytes(), DIRECTORY_TYPE)

    @classmethod
    def parse(cls, raw: bytes, *, where: str | None = None) -> Directory:
        """A directory from its bytes: JSON object, valid names and entries, canonical."""
        if len(raw) > MAX_DIRECTORY_BYTES:
            raise PackageError(f"directory document is larger than {MAX_DIRECTORY_BYTES} bytes",
                               path=where)
        value = _loads(raw, "directory", where)
        if not isinstance(value, dict):
            raise PackageError("a directory is a JSON object of name -> entry", path=where)
        entries: dict[str, Entry] = {}
        for name, obj in value.items():
            inner = f"{where}/{name}" if where else name
            check_name(name, where=where)
            entries[name] = Entry.from_json(obj, where=inner)
        _check_folding(entries, where)
        _canonical(value, raw, "directory", where)
        return cls(entries)


def _check_folding(names: Iterable[str], where: str | None) -> None:
    seen: dict[str, str] = {}
    for n in names:
        other = seen.setdefault(n.lower(), n)
        if other != n:
            raise PackageError(f"names {other!r} and {n!r} differ only in case", path=where,
                               hint="they would collide on case-insensitive file systems")


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A whole package tree.

    ``directories`` maps each directory's path (``""`` for the root) to its Directory and
    ``files`` maps each file's path (``"main.wasm"``, ``"data/x.bin"``) to its entry.
    """

    directories: Mapping[str, Directory]
    files: Mapping[str, Entry]

    @property
    def root(self) -> Directory:
        return self.directories[""]

    @cached_property
    def root_entry(self) -> Entry:
        """The entry of the root directory (what a drawbridge tag holds)."""
        return self.root.entry()

    @property
    def identity(self) -> str:
        return package_identity(self)

    def walk(self) -> Iterator[tuple[str, Entry]]:
        """Every (path, entry) below the root, parents before children (upload order:
        directory documents first, then the files they list), names sorted."""
        def rec(prefix: str) -> Iterator[tuple[str, Entry]]:
            for name, entry in sorted(self.directories[prefix].entries.items()):
                path = f"{prefix}/{name}" if prefix else name
                yield path, entry
                if entry.is_directory:
                    yield from rec(path)
        yield from rec("")

    def entry_at(self, path: str) -> Entry:
        """The entry at ``path`` ("" is the root directory's entry)."""
        if path == "":
            return self.root_entry
        parts = split_path(path)
        parent = self.directories.get("/".join(parts[:-1]))
        entry = parent.entries.get(parts[-1]) if parent is not None else None
        if entry is None:
            raise PackageError("no such entry in the package", path=path)
        return entry

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_files(cls, files: Mapping[str, Entry]) -> Tree:
        """The tree of ``files`` (path -> entry); intermediate directories are implied."""
        if len(files) > MAX_FILES:
            raise PackageError(f"more than {MAX_FILES} files")
        children: dict[str, dict[str, Entry | None]] = {"": {}}
        for path in sorted(files):
            parts = split_path(path)
            if files[path].is_directory:
                raise PackageError("a file cannot have the directory media type", path=path)
            for i in range(len(parts) - 1):
                parent, d = "/".join(parts[:i]), "/".join(parts[:i + 1])
                if d in files:
                    raise PackageError("is both a file and a directory", path=d)
                children[parent].setdefault(parts[i], None)
                children.setdefault(d, {})
            children["/".join(parts[:-1])][parts[-1]] = files[path]
        dirs: dict[str, Directory] = {}

        def build(prefix: str) -> Directory:
            entries: dict[str, Entry] = {}
            for name, entry in children[prefix].items():
                path = f"{prefix}/{name}" if prefix else name
                entries[name] = entry if entry is not None else build(path).entry()
            _check_folding(entries, prefix or None)
            dirs[prefix] = Directory(entries)
            return dirs[prefix]

        build("")
        return cls(dirs, dict(files))

    @classmethod
    def from_directories(cls, root: bytes, load: Callable[[str, Entry], bytes], *,
                         expect: Entry | None = None) -> Tree:
        """Assemble a tree from directory documents, verifying each against its parent.

        ``root`` is the root directory's bytes (checked against ``expect``, e.g. a tag
        entry, when given); ``load(path, entry)`` returns the bytes of the sub-directory at
        ``path``, which must match ``entry``. Every document is parsed strictly.
        """
        if expect is not None:
            _verify_bytes(root, expect, "")
        dirs: dict[str, Directory] = {}
        files: dict[str, Entry] = {}

        def rec(prefix: str, raw: bytes, depth: int) -> None:
            directory = Directory.parse(raw, where=prefix or None)
            dirs[prefix] = directory
            for name, entry in sorted(directory.entries.items()):
                path = f"{prefix}/{name}" if prefix else name
                # files and directories both count: a hostile registry must not make us
                # fetch an unbounded number of directory documents
                if len(files) + len(dirs) >= MAX_FILES:
                    raise PackageError(f"more than {MAX_FILES} entries")
                if entry.is_directory:
                    if depth + 1 >= MAX_DEPTH:
                        raise PackageError(f"nested deeper than {MAX_DEPTH} directories",
                                           path=path)
                    sub = load(path, entry)
                    _verify_bytes(sub, entry, path)
                    rec(path, sub, depth + 1)
                else:
                    files[path] = entry

        rec("", root, 0)
        return cls(dirs, files)

    @classmethod
    def build(cls, path: Path, *, progress: Callable[[int], None] | None = None) -> Tree:
        """Hash the package directory ``path`` (streaming every file).

        Refuses symbolic links, special files, invalid names and empty directories; does
        not require ``main.wasm`` (see :meth:`check_package`).
        """
        return cls.from_files(dict(scan(Path(path), progress=progress)))

    def check_package(self) -> Tree:
        """``self`` if it is a runnable package: ``main.wasm`` (application/wasm) at the root
        and, if present, ``Enarx.toml`` (application/toml, at most 1 MiB)."""
        main = self.root.entries.get("main.wasm")
        if main is None or main.type != "application/wasm":
            raise PackageError("the package has no main.wasm at its root",
                               hint="a package is a directory with main.wasm, an optional "
                               "Enarx.toml and optional data files")
        toml = self.root.entries.get("Enarx.toml")
        if toml is not None and (toml.type != "application/toml"
                                 or toml.length > MAX_TOML_BYTES):
            raise PackageError(f"Enarx.toml must be application/toml of at most "
                               f"{MAX_TOML_BYTES} bytes", path="Enarx.toml")
        return self


def _verify_bytes(raw: bytes, entry: Entry, path: str) -> None:
    v = DigestVerifier.for_entry(entry, path=path or "(root directory)")
    v.update(raw)
    v.finish()
    if not entry.is_directory:
        raise PackageError("expected a directory entry", path=path or None)


def walk_files(root: Path) -> Iterator[tuple[str, str]]:
    """(package path, file system path) of every file under the directory ``root``, names
    sorted, checked as a package allows: valid names, no two differing only in case, no
    symbolic links or special files, no empty directories, at most :data:`MAX_FILES` files and :data:`MAX_DEPTH` levels.
    The files are not opened (:func:`open_regular` checks each again when it is read)."""
    try:
        st = os.stat(root)
    except OSError as e:
        raise PackageError(f"cannot read the package directory {root}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PackageError(f"{root} is not a directory")
    count = 0

    def rec(directory: str, prefix: str, depth: int) -> Iterator[tuple[str, str]]:
        nonlocal count
        if depth > MAX_DEPTH:
            raise PackageError(f"nested deeper than {MAX_DEPTH} directories", path=prefix)
        try:
            with os.scandir(directory) as it:
                items = sorted(it, key=lambda d: d.name)
        except OSError as e:
            raise PackageError(f"cannot list {directory}: {e.strerror}") from None
        if not items and prefix:
            raise PackageError("empty directory", path=prefix,
                               hint="remove it: drawbridge trees have no empty directories")
        for d in items:
            check_name(d.name, where=prefix or None)
        _check_folding((d.name for d in items), prefix or None)
        for d in items:
            path = f"{prefix}/{d.name}" if prefix else d.name
            if d.is_symlink():
                raise PackageError("is a symbolic link", path=path,
                                   hint="copy the target into the package instead")
            if d.is_dir(follow_symlinks=False):
                yield from rec(d.path, path, depth + 1)
            elif d.is_file(follow_symlinks=False):
                count += 1
                if count > MAX_FILES:
                    raise PackageError(f"more than {MAX_FILES} files")
                yield path, d.path
            else:
                raise PackageError("is not a regular file or directory", path=path,
                                   hint="a package holds regular files and directories only")

    yield from rec(os.fspath(root), "", 0)


def scan(root: Path, *, progress: Callable[[int], None] | None = None,
         keep: dict[str, bytes] | None = None, keep_max: int = 0
         ) -> Iterator[tuple[str, Entry]]:
    """(path, entry) of every file under the directory ``root`` (:func:`walk_files`), hashed
    as it goes. With ``keep``, the bytes hashed are kept there too (path -> bytes) while
    their total stays within ``keep_max`` (:func:`hash_file`)."""
    kept_total = 0
    for path, fs_path in walk_files(root):
        kept: list[bytes] | None = [] if keep is not None else None
        entry = hash_file(fs_path, media_type(path.rpartition("/")[2]), progress=progress,
                          keep=kept, keep_max=keep_max - kept_total)
        if keep is not None and kept:
            keep[path] = kept[0]
            kept_total += entry.length
        yield path, entry


def package_identity(tree: Tree | Entry) -> str:
    """``"sha384:<hex>"`` of the root directory: the workload identity of the package.

    Takes the tree, or the root directory's entry (e.g. a verified tag entry)."""
    entry = tree.root_entry if isinstance(tree, Tree) else tree
    if not entry.is_directory:
        raise PackageError("a package identity is the digest of a directory entry")
    return "sha384:" + entry.sha384_hex()


def identity_of_files(files: Mapping[str, bytes | bytearray | memoryview]) -> str:
    """The package identity of in-memory files (path -> bytes): the same value
    ``Tree.build`` gives for a directory holding exactly these files."""
    return package_identity(Tree.from_files(
        {p: hash_bytes(data, media_type(p.rsplit("/", 1)[-1])) for p, data in files.items()}))
