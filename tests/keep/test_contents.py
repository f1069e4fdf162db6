"""`enarx deploy HOST/USER/REPO:TAG` from a PRIVATE drawbridge repository (enarx.keep.contents):
the host holds only a read token (tags and directories), the Keep attests to a real steward
and fetches the files with its steward-issued certificate from a real `enarx registry serve
--steward-ca`. A Keep whose workload the repository does not allow gets 403 on the contents,
and without an attested certificate nothing is fetched or run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from enarx.package.crypt import default_key_resource
from enarx.package.tree import Tree
from tests.keep.deploykit import (
    DATA_MARKER,
    Env,
    Steward,
    make_env,
    probe_package,
    sim_policy,
)
from tests.registry.server import RegistryServer

OTHER = "sha384:" + "ab" * 48
ARGS = ["cat:/data/info.txt"]


@dataclass
class World:
    env: Env
    steward: Steward
    registry: RegistryServer
    read_token: str
    owner_token: str
    identity: str

    def spec(self, repo: str = "app", tag: str = "1.0.0") -> str:
        return f"{self.registry.url.removeprefix('https://')}/alice/{repo}:{tag}"

    def run(self, *args: str | Path, token: str | None = None, steward: bool = True,
            timeout: float = 120) -> tuple[int, str, str]:
        env = self.env
        saved = dict(env.env)
        env.env["ENARX_REGISTRY_TOKEN"] = token or self.read_token
        try:
            extra: list[str | Path] = []
            if steward and args[0] == "deploy":
                extra = ["--steward", self.steward.url, "--steward-ca", self.steward.ca]
            r = env.run(args[0], *extra, *args[1:], timeout=timeout)
        finally:
            env.env.clear()
            env.env.update(saved)
        return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("private-deploy")
    env = make_env(root / "host", module_cache, tmp_path_factory.getbasetemp() / "sim-state")
    pub = root / "publisher"
    plain = probe_package(pub / "plain", args=ARGS)
    secret = probe_package(pub / "enc", args=ARGS, data=DATA_MARKER + "-enc")
    ids = [Tree.build(p).identity for p in (plain, secret)]
    s = Steward(env, "steward", sim_policy(env, {default_key_resource(ids[1]): [ids[1]]}))
    reg = None
    try:
        reg = RegistryServer(root / "host" / "registry", "--steward-ca", str(s.ca), tls=True)
        assert reg.ca is not None
        env.env["ENARX_CA_BUNDLE"] = str(reg.ca)
        owner = reg.token("alice")
        w = World(env, s, reg, reg.token("alice", "--read"), owner, ids[0])
        host = reg.url.removeprefix("https://")
        for args in (("user", "register", f"{host}/alice"),
                     ("repo", "register", "--private", f"{host}/alice/app"),
                     ("repo", "register", "--private", "--allow-workload", OTHER,
                      f"{host}/alice/vault"),
                     ("package", "publish", w.spec(), plain),
                     ("package", "publish", "--encrypt", "--steward", s.url, "--steward-ca",
                      s.ca, "--admin-token-file", s.state / "admin-token", w.spec("vault"),
                      secret)):
            code, _, err = w.run(*args, token=owner)
            assert code == 0, err
        yield w
    finally:
        if reg is not None:
            reg.stop()
        s.stop()


def test_a_private_package_deploys_with_the_keeps_certificate(world: World) -> None:
    code, out, err = world.run("deploy", "--backend", "sim", "--allow-insecure", world.spec())
    assert code == 0, err
    assert f"cat /data/info.txt {DATA_MARKER}\n" in out
    assert f"attested to {world.steward.url}: package {world.identity}" in err


def test_an_encrypted_private_package_deploys(world: World) -> None:
    # the manifest (metadata) is read with the read token before attesting, the ciphertext
    # with the certificate after
    code, out, err = world.run("deploy", "--backend", "sim", "--allow-insecure",
                               world.spec("vault"))
    assert code == 0, err
    assert f"cat /data/info.txt {DATA_MARKER}-enc\n" in out


def test_the_hosts_read_token_alone_reads_no_contents(world: World, tmp_path: Path) -> None:
    # without a steward the Keep has no certificate: the registry refuses the files
    code, out, err = world.run("deploy", "--backend", "sim", "--allow-insecure", world.spec(),
                               steward=False)
    assert code == 2 and "403" in err and "hint: a read token reads tags" in err, err
    assert DATA_MARKER not in out + err
    # nor can the host fetch them itself, while the metadata is readable
    code, _, err = world.run("package", "fetch", world.spec(), "--out", tmp_path / "o")
    assert code == 2 and "403" in err and "attested workload" in err, err
    assert not (tmp_path / "o").exists()
    code, out, err = world.run("package", "info", "--json", world.spec())
    assert code == 0 and world.identity in out, err


def test_a_keep_certified_by_a_steward_the_registry_does_not_trust_runs_nothing(
        world: World) -> None:
    other = Steward(world.env, "untrusted", sim_policy(world.env, {}))
    try:
        saved = world.steward
        world.steward = other
        try:
            code, out, err = world.run("deploy", "--backend", "sim", "--allow-insecure",
                                       world.spec())
        finally:
            world.steward = saved
    finally:
        other.stop()
    assert code == 1 and "attested to" in err, err  # it attested, then the registry refused
    assert "rejected the Keep's certificate" in err and "--steward-ca" in err, err
    assert DATA_MARKER not in out + err


def test_a_keep_attested_as_another_workload_gets_403_on_the_contents(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real attestation for another workload (as a Keep running another package holds):
    the registry serves it the metadata but refuses every file."""
    from enarx import platform
    from enarx.keep.attest import StewardTarget, attest_keep
    from enarx.keep.contents import contents_source
    from enarx.package.drawbridge import RegistryRefused
    from enarx.package.fetch import ClientOptions, open_source
    from enarx.package.spec import parse_spec

    for k, v in world.env.env.items():
        if k.startswith("ENARX_") or k == "HOME":
            monkeypatch.setenv(k, v)
    target = StewardTarget(world.steward.url, world.steward.ca.read_bytes())
    backend = platform.select("sim")
    spec = parse_spec(world.spec())
    opts = ClientOptions(token=world.read_token, ca_bundle=world.registry.ca)
    stranger = attest_keep(target, backend, "sha384:" + "cd" * 48)
    own = attest_keep(target, backend, world.identity)
    src = open_source(spec, opts)
    try:
        tree = src.resolve().tree  # metadata: the read token suffices
        entry = tree.files["data/info.txt"]
        reader = contents_source(spec, opts, stranger, src)
        assert reader is not src
        try:
            with pytest.raises(RegistryRefused) as caught:
                b"".join(reader.stream("data/info.txt", entry))
        finally:
            reader.close()
        assert caught.value.status == 403
        # the Keep attested as this very package reads it
        allowed = contents_source(spec, opts, own, src)
        try:
            assert b"".join(allowed.stream("data/info.txt", entry)) == DATA_MARKER.encode()
        finally:
            allowed.close()
    finally:
        src.close()
    # a workload on the repository's allow list reads it too (vault allows OTHER)
    listed = attest_keep(target, backend, OTHER)
    vault = parse_spec(world.spec("vault"))
    src = open_source(vault, opts)
    try:
        tree = src.resolve().tree
        path, entry = next((p, e) for p, e in tree.files.items() if p.endswith("main.wasm"))
        reader = contents_source(vault, opts, listed, src)
        try:
            assert len(b"".join(reader.stream(path, entry))) == entry.length
        finally:
            reader.close()
        reader = contents_source(vault, opts, stranger, src)
        try:
            with pytest.raises(RegistryRefused) as caught:
                b"".join(reader.stream(path, entry))
        finally:
            reader.close()
        assert caught.value.status == 403
    finally:
        src.close()
