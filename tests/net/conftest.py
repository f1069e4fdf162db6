"""Fixtures for the network tests: Keeps in the background, a scratch CA for TLS peers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.net.netkeep import Keep, StartKeep
from tests.net.netpki import Pki, make_pki


@pytest.fixture
def start_keep(tmp_path: Path, module_cache: Path) -> Iterator[StartKeep]:
    """``start_keep(wasm, config, args, flags=())`` -> a running :class:`Keep` (killed at the end)."""
    keeps: list[Keep] = []

    def start(wasm: Path, config: str, args: Sequence[str] = (), **kw: object) -> Keep:
        d = tmp_path / f"keep{len(keeps)}"
        d.mkdir()
        k = Keep(d, wasm, config, args, cache=module_cache, **kw)  # type: ignore[arg-type]
        keeps.append(k)
        return k

    yield start
    for k in keeps:
        k.kill()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
