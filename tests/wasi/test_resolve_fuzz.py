"""Property: whatever bytes the guest passes as a path, resolution stays inside the pre-open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.wasi.abi import WasiError
from enarx.wasi.resolve import resolve

PARTS = [b"a", b"b", b"..", b".", b"/", b"//", b"up", b"abs", b"loop", b"deep", b"\xff",
         b"\0", b"a/../..", b"../b"]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    top = tmp_path_factory.mktemp("fuzz")
    (top / "outside").mkdir()
    box = top / "box"
    (box / "a" / "b").mkdir(parents=True)
    (box / "b").write_bytes(b"")
    os.symlink("..", box / "a" / "up")  # back to the root: allowed
    os.symlink("../..", box / "a" / "b" / "deep")  # back to the root from two down
    os.symlink("../outside", box / "up")  # escapes
    os.symlink(str(top / "outside"), box / "abs")  # escapes
    os.symlink("loop", box / "loop")
    fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    yield fd, os.path.realpath(box)
    os.close(fd)


paths = st.lists(st.sampled_from(PARTS) | st.binary(max_size=4), max_size=12).map(b"/".join)


@settings(max_examples=400, deadline=None)
@given(path=paths, follow=st.booleans())
def test_resolution_never_leaves_the_preopen(
    tree: tuple[int, str], path: bytes, follow: bool
) -> None:
    root_fd, root = tree
    try:
        r = resolve(root_fd, path, follow=follow)
    except WasiError:
        return
    with r:
        where = os.readlink(f"/proc/self/fd/{r.dirfd}")
        assert where == root or where.startswith(root + "/"), (path, where)
        assert b"/" not in r.name and r.name not in (b"..", b"")
        if follow:  # a followed final name is never a symlink: we resolved it ourselves
            assert not (Path(where) / os.fsdecode(r.name)).is_symlink()
