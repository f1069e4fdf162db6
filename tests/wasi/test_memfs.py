"""The in-memory read-only pre-open (enarx.wasi.memfs): what a real C guest (wasi-libc) sees
in /run/secrets and in a deployed package's directories, and every write refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.wasi import abi
from enarx.wasi.abi import WasiError
from enarx.wasi.memfs import MemDirHandle, MemFileHandle, build_tree
from tests.wasi.wasirun import run_guest

# wasi-libc errno values (the WASI errno numbers)
EBADF, EISDIR, ENOENT, ENOTDIR, EPERM, EROFS = 8, 31, 44, 54, 63, 69

TREE = {"db": b"s3cret-db-password", "api": b"token-123",
        "sub": {"deep.txt": b"0123456789", "empty": {}}}


def probe(*cmds: str, tree: dict[str, object] | None = None,
          guest_path: str = "/run/secrets") -> dict[str, str]:
    d = MemDirHandle.preopen_tree(tree if tree is not None else TREE, guest_path)  # type: ignore[arg-type]
    r = run_guest("deploy_probe.c", cmds, extra=[d])
    assert r.exit_code == 0, r.stderr
    out = {}
    for line in r.lines:
        kind, path, rest = [*line.split(" ", 2), "", ""][:3]
        out[f"{kind}:{path}"] = rest
    return out


def test_files_read_list_and_stat_from_memory() -> None:
    out = probe("cat:/run/secrets/db", "cat:/run/secrets/sub/deep.txt", "ls:/run/secrets",
                "ls:/run/secrets/sub", "stat:/run/secrets/api", "stat:/run/secrets/sub",
                "tail:/run/secrets/sub/deep.txt:7", "cat:/run/secrets/sub/../api")
    assert out["cat:/run/secrets/db"] == "s3cret-db-password"
    assert out["cat:/run/secrets/sub/deep.txt"] == "0123456789"
    assert out["ls:/run/secrets"] == "api,db,sub"
    assert out["ls:/run/secrets/sub"] == "deep.txt,empty"
    assert out["stat:/run/secrets/api"] == "9 file"
    assert out["stat:/run/secrets/sub"].endswith(" dir")
    assert out["tail:/run/secrets/sub/deep.txt"] == "789"
    assert out["cat:/run/secrets/sub/../api"] == "token-123"


def test_every_write_is_refused_and_nothing_changes() -> None:
    out = probe("write:/run/secrets/db", "write:/run/secrets/new", "mkdir:/run/secrets/d",
                "unlink:/run/secrets/db", "write:/run/secrets/sub", "cat:/run/secrets/db",
                "ls:/run/secrets")
    assert out["write:/run/secrets/db"] == f"errno {EROFS}"
    assert out["write:/run/secrets/new"] == f"errno {EROFS}"
    assert out["mkdir:/run/secrets/d"] == f"errno {EROFS}"
    assert out["unlink:/run/secrets/db"] == f"errno {EROFS}"
    assert out["write:/run/secrets/sub"] in (f"errno {EROFS}", f"errno {EISDIR}")
    assert out["cat:/run/secrets/db"] == "s3cret-db-password"
    assert out["ls:/run/secrets"] == "api,db,sub"


def test_missing_names_and_escapes() -> None:
    out = probe("cat:/run/secrets/nope", "cat:/run/secrets/db/x", "ls:/run/secrets/db",
                "stat:/run/secrets/nope")
    assert out["cat:/run/secrets/nope"] == f"errno {ENOENT}"
    assert out["cat:/run/secrets/db/x"] == f"errno {ENOTDIR}"
    assert out["ls:/run/secrets/db"] == f"errno {ENOTDIR}"
    assert out["stat:/run/secrets/nope"] == f"errno {ENOENT}"
    # ".." above the pre-open is refused with EPERM, as for host directories (cap-std)
    out = probe("cat:/run/secrets/../secrets/db", "cat:/run/secrets/sub/../../x")
    assert out["cat:/run/secrets/../secrets/db"] == f"errno {EPERM}"
    assert out["cat:/run/secrets/sub/../../x"] == f"errno {EPERM}"


def test_an_empty_secrets_directory_lists_nothing() -> None:
    assert probe("ls:/run/secrets", tree={})["ls:/run/secrets"] == ""


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid file name"):
        build_tree({name: b"x"})


_COMPONENTS = st.sampled_from(["db", "api", "sub", "deep.txt", "empty", ".", "..", "",
                               "nope", "\u00e9", "x" * 300])


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(_COMPONENTS, max_size=8), lead=st.booleans(), trail=st.booleans(),
       oflags=st.sampled_from([0, abi.OFLAG_DIRECTORY, abi.OFLAG_CREAT, abi.OFLAG_TRUNC]),
       write=st.booleans())
def test_any_guest_path_gives_a_handle_inside_the_tree_or_an_errno(
    parts: list[str], lead: bool, trail: bool, oflags: int, write: bool,
) -> None:
    """Fuzz: whatever path and flags the guest passes, the answer is a read-only handle on
    a node of this tree or a WASI errno, never another exception."""
    d = MemDirHandle.preopen_tree(TREE, "/run/secrets")  # type: ignore[arg-type]
    path = ("/" if lead else "") + "/".join(parts) + ("/" if trail else "")
    base = abi.RIGHT_FD_WRITE if write else abi.RIGHT_FD_READ
    try:
        h = d.open_path(path.encode(), oflags, base, 0)
    except WasiError as e:
        assert isinstance(e.errno, int)
        return
    assert not (oflags & (abi.OFLAG_CREAT | abi.OFLAG_TRUNC)) and not write
    assert isinstance(h, (MemDirHandle, MemFileHandle))
    assert not h.rights_base & abi.RIGHT_FD_WRITE
