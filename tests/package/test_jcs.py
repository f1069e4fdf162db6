"""enarx.package.jcs: the fast canonical JSON gives exactly the RFC 8785 bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from enarx.package import jcs
from enarx.package.tree import Tree

CASES: list[Any] = [
    {},
    {"b": 1, "a": {"z": "x", "y": -(2**53) + 1}, "c": 2**53 - 1},
    {"name with \"quotes\" and \\": "tab\there", "ctl": "\x00\x1f\x7f"},
    {"é": "ü", "€": "😀", "\ue000": 1, "\U0001f600": 2},  # UTF-16 order differs here
    {"list": [3, 1, 2], "t": True, "f": False, "n": None, "x": 1.5, "e": 1e21},
    {"k": "a/b<>&'"},
    "plain", 0, [],
]


@pytest.mark.parametrize("value", CASES, ids=range(len(CASES)))
def test_same_bytes_as_rfc8785(value: Any) -> None:
    assert jcs.dumps(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("big", [2**53, -(2**53), 2**64])
def test_integers_rfc8785_refuses_are_still_refused(big: int) -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        jcs.dumps({"length": big})


def test_package_directories_serialise_as_rfc8785(tmp_path: Path) -> None:
    for name in ("main.wasm", "Enarx.toml", "lib/a.py", "lib/B-c_d.py", "data/x.y.bin"):
        p = tmp_path.joinpath(*name.split("/"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64))
    tree = Tree.build(tmp_path)
    for d in tree.directories.values():
        assert d.to_bytes() == rfc8785.dumps(d.to_json())
