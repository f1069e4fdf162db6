"""`enarx deploy file://DIR` reads a local package once and hashes it only where that binds
something (enarx.keep.deploy._local_files): an encrypted package is vouched for by
decryption, a plaintext one without a steward attests nothing. Every refusal still holds."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enarx.keep.attest import StewardTarget
from enarx.keep.deploy import DeployRequest, prepare
from enarx.package import crypt, tree
from enarx.package.errors import PackageError
from enarx.package.tree import Tree
from enarx.platform.sim import SimBackend
from tests.keep.deploykit import Env, Steward, make_env, probe_package, sim_policy, steward


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Env:
    return make_env(tmp_path_factory.mktemp("deploy-local"), module_cache,
                    tmp_path_factory.getbasetemp() / "sim-state")


@pytest.fixture(scope="module")
def package(env: Env) -> tuple[Path, crypt.EncryptedPackage]:
    plain = probe_package(env.root / "plain")
    return plain, crypt.encrypt_package(plain, env.root / "enc")


@pytest.fixture(scope="module")
def granted(env: Env, package: tuple[Path, crypt.EncryptedPackage]) -> Iterator[Steward]:
    enc = package[1]
    for s in steward(env, "granted", sim_policy(env, {enc.resource: [enc.identity]})):
        s.put(enc.resource, enc.key)
        yield s


@pytest.fixture
def no_hashing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sim evidence for in-process deploys, and no file of a local package hashed."""
    monkeypatch.setenv("ENARX_SIM_DIR", str(env.env["ENARX_SIM_DIR"]))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a local package file was hashed")

    monkeypatch.setattr(tree, "hash_file", refuse)


def _prepare(spec: Path, s: Steward | None = None) -> Any:
    target = StewardTarget(url=s.url, ca_pem=s.ca.read_bytes()) if s is not None else None
    return prepare(DeployRequest(spec=f"file://{spec}", steward=target, allow_insecure=True),
                   SimBackend())


def test_a_local_encrypted_package_is_read_once_unhashed_and_every_fault_still_refused(
        env: Env, package: tuple[Path, crypt.EncryptedPackage], granted: Steward,
        no_hashing: None, tmp_path: Path) -> None:
    plain, enc = package
    ready = _prepare(env.root / "enc", granted)
    assert ready.encrypted and ready.identity == enc.identity
    assert ready.files["data/info.txt"] == (plain / "data" / "info.txt").read_bytes()

    def variant(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(env.root / "enc", d)
        return d

    flipped = variant("flipped")  # one bit of main.wasm's ciphertext
    data = bytearray((flipped / "main.wasm").read_bytes())
    data[-1] ^= 1
    (flipped / "main.wasm").write_bytes(bytes(data))
    added = variant("added")  # a file the publisher never encrypted for that path
    shutil.copyfile(added / "data" / "info.txt", added / "data" / "extra.txt")
    dropped = variant("dropped")
    os.remove(dropped / "Enarx.toml")
    os.symlink("main.wasm", dropped / "Enarx.toml")  # a link in its place
    folded = variant("folded")
    shutil.copyfile(folded / "Enarx.toml", folded / "ENARX.toml")
    for bad, fault in [(flipped, "fails authentication"),
                       (added, r"extra\.txt: chunk 0 fails authentication"),
                       (dropped, "symbolic link"), (folded, "differ only in case")]:
        with pytest.raises((crypt.DecryptionError, PackageError), match=fault):
            _prepare(bad, granted)
    os.remove(dropped / "Enarx.toml")
    with pytest.raises(crypt.DecryptionError, match="do not form the package"):
        _prepare(dropped, granted)


def test_a_local_plaintext_package_without_a_steward_is_read_unhashed(
        env: Env, package: tuple[Path, crypt.EncryptedPackage], no_hashing: None,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plain = package[0]
    ready = _prepare(plain)
    assert not ready.encrypted and ready.known_identity is None
    assert ready.files["main.wasm"] == (plain / "main.wasm").read_bytes()
    monkeypatch.undo()
    assert ready.identity == Tree.build(plain).identity  # the same identity, on demand
    no_main = tmp_path / "no-main"
    shutil.copytree(plain, no_main)
    os.remove(no_main / "main.wasm")
    monkeypatch.setenv("ENARX_SIM_DIR", str(env.env["ENARX_SIM_DIR"]))
    with pytest.raises(PackageError, match=r"no main\.wasm"):
        _prepare(no_main)
