"""``enarx dir``: prepare and inspect encrypted data directories outside a Keep.

``enarx dir keygen --out KEY`` writes 32 random bytes (mode 0600); ``enarx dir encrypt SRC
DST --key KEY`` turns a plain tree into an encrypted one a Keep can pre-open with
``--dir DST::/data:enc=KEY``; ``enarx dir decrypt SRC DST --key KEY`` does the reverse.
Both stream file by file with a progress bar on a terminal, and write DST atomically (a
temporary directory next to it, renamed at the end). Format: docs/encrypted-dirs.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

import click

from enarx.encdir.keyfile import read_key_file
from enarx.encdir.keys import KEY_SIZE
from enarx.errors import ResourceError, UsageError

__all__ = ["KEY_SIZE", "dir_group", "read_key_file", "write_key_file"]




def write_key_file(out: Path) -> None:
    """Create ``out`` (never overwrite) holding a fresh random key, mode 0600."""
    if not out.parent.is_dir():
        raise UsageError(f"no such directory: {out.parent}", hint="create it first")
    key = os.urandom(KEY_SIZE)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} already exists",
                         hint="choose another --out (a key is never overwritten)") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    os.close(fd)


def _check_paths(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise UsageError(f"{src} is not a directory", hint="SRC must be an existing directory")
    if os.path.lexists(dst):
        raise UsageError(f"{dst} already exists",
                         hint="choose a new DST (it is created; nothing is overwritten)")
    if not dst.absolute().parent.is_dir():
        raise UsageError(f"no such directory: {dst.absolute().parent}", hint="create it first")
    s, d = src.resolve(), dst.absolute().parent.resolve() / dst.name
    if s == d or s in d.parents:
        raise UsageError("DST must not be inside SRC", hint="write DST next to SRC")


def _plain_size(root: Path) -> int:
    total, seen = 0, set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # vanished: the tree call reports it
                s = os.lstat(os.path.join(dirpath, name))
                if s.st_nlink > 1 and (s.st_dev, s.st_ino) in seen:
                    continue  # a hard link's bytes count once, as the tree call counts them
                seen.add((s.st_dev, s.st_ino))
                total += s.st_size
    return total


def _encrypted_size(root: Path, key: bytes) -> int:
    """Plaintext bytes in the encrypted tree ``root``; opening it checks the key first."""
    from enarx.encdir import EncDir

    d = EncDir.open(root, key, readonly=True)
    try:
        total, stack, seen = 0, [""], set()
        while stack:
            path = stack.pop()
            for name, kind in d.listdir(path):
                child = path + "/" + name.decode("utf-8", "surrogateescape") if path \
                    else name.decode("utf-8", "surrogateescape")
                if kind == "dir":
                    stack.append(child)
                else:
                    node = d.lookup(child)
                    if node.nlink > 1 and node.ino in seen:
                        continue  # a further name of a hard-linked file: counted once
                    seen.add(node.ino)
                    total += node.size
        return total
    finally:
        d.close()


def _run_tree(verb: str, fn: Callable[..., None], src: Path, dst: Path, key: bytes,
              total: int) -> None:
    """``fn(src, dst, key, progress)`` with ``progress(n)`` (plaintext bytes) driving a bar."""
    from enarx.cli.package_cmd import progress_factory
    from enarx.encdir import MAX_NAME, EncDirFsError

    try:
        with progress_factory(verb, str(dst)) as start:
            fn(src, dst, key, start(total))
    except EncDirFsError as e:
        if not e.hint:  # every error the user sees says how to fix it
            e.hint = _fs_hint(e.errno, MAX_NAME)
        raise
    except OSError as e:  # the host file system (SRC unreadable, DST's disk full, ...)
        where = f"{e.filename}: " if e.filename else ""
        raise ResourceError(f"{where}{e.strerror or e}", hint=_fs_hint(e.errno, MAX_NAME)) \
            from None


def _fs_hint(err: int | None, max_name: int) -> str:
    return {
        errno.ENOTSUP: "copy the tree with symlinks resolved first (`cp -rL SRC COPY`); an "
                       "encrypted directory holds only regular files and directories",
        errno.EEXIST: "choose a new DST (it is created; nothing is overwritten)",
        errno.ENAMETOOLONG: f"shorten the name: an encrypted directory allows names of up "
                            f"to {max_name} bytes",
        errno.ENOSPC: "free space on DST's file system",
        errno.EACCES: "check permissions on SRC and DST's parent",
        errno.EPERM: "check permissions on SRC and DST's parent",
    }.get(err or 0, "check SRC and DST and try again")


@click.group("dir")
def dir_group() -> None:
    """Prepare and inspect encrypted data directories (docs/encrypted-dirs.md).

    \b
    A Keep pre-opens an encrypted directory with
      enarx run --dir HOST::GUEST:enc=KEYFILE app.wasm
    or, in Enarx.toml, `encryption_key = "<steward resource>"` on a kind = "dir" entry.
    On the host, file contents and names are ciphertext; the guest sees plain files.
    """


@dir_group.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Key file to create (32 random bytes, mode 0600; never overwritten).")
def keygen(out: Path) -> None:
    """Write a new random 32-byte directory key.

    \b
    Same as `head -c 32 /dev/urandom > KEYFILE; chmod 600 KEYFILE`.
    """
    write_key_file(out)
    click.echo(f"directory key: {out} (keep it secret; without it the data is lost)")


_KEY_OPTION = click.option("--key", "key_file", required=True,
                           type=click.Path(path_type=Path),
                           help="The 32-byte directory key file.")


@dir_group.command("encrypt")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@_KEY_OPTION
def encrypt(src: Path, dst: Path, key_file: Path) -> None:
    """Encrypt the plain directory tree SRC into a new encrypted directory DST.

    \b
    Regular files and directories are copied; symlinks and special files are refused.
    Example:
      enarx dir keygen --out data.key
      enarx dir encrypt ./data ./data.enc --key data.key
      enarx run --dir ./data.enc::/data:enc=data.key app.wasm
    """
    from enarx.encdir import encrypt_tree

    key = read_key_file(key_file)
    _check_paths(src, dst)
    _run_tree("encrypted", encrypt_tree, src, dst, key, _plain_size(src))
    click.echo(f"encrypted {src} -> {dst}")


@dir_group.command("decrypt")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@_KEY_OPTION
def decrypt(src: Path, dst: Path, key_file: Path) -> None:
    """Decrypt the encrypted directory SRC into a new plain directory tree DST.

    \b
    A wrong key is refused before anything is written; a tampered file fails the whole
    run (exit 4) and DST is not created.
    """
    from enarx.encdir import decrypt_tree

    key = read_key_file(key_file)
    _check_paths(src, dst)
    _run_tree("decrypted", decrypt_tree, src, dst, key, _encrypted_size(src, key))
    click.echo(f"decrypted {src} -> {dst}")
