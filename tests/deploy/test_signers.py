"""A steward whose policy requires a signer (``[workload] signers``): real `enarx steward
serve` + `enarx registry serve` on 127.0.0.1, `enarx package publish [--sign] [--encrypt]`,
and `enarx deploy` on sim with --allow-insecure WITHOUT --signer: the steward alone decides.
Unsigned and wrongly signed packages are refused (exit 4, rule workload.signer) and never
run; packages signed by the named key run."""

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
from tests.package.ociregistry import DockerRegistry
from tests.registry.server import RegistryServer


@dataclass
class World:
    env: Env
    steward: Steward
    registry: RegistryServer
    pub: Path  # the publisher's keys and packages
    oci_pkg: Path  # an encrypted package for the OCI registry (its key is granted)

    def deploy(self, tag: str, *extra: str, spec: str | None = None) -> tuple[int, str, str]:
        r = self.env.run("deploy", "--backend", "sim", "--allow-insecure", "--steward",
                         self.steward.url, "--steward-ca", self.steward.ca, *extra,
                         spec or f"{self.registry.url}/alice/app:{tag}")
        return r.returncode, r.stdout, r.stderr

    def encrypt(self) -> tuple[str | Path, ...]:
        s = self.steward
        return ("--encrypt", "--steward", s.url, "--steward-ca", s.ca, "--admin-token-file",
                s.state / "admin-token")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("deploy-signers")
    env = make_env(root / "host", module_cache, tmp_path_factory.getbasetemp() / "sim-state")
    pub = root / "publisher"
    pkg = probe_package(pub / "pkg", args=["cat:/data/info.txt"])
    enc_pkg = probe_package(pub / "enc", args=["cat:/data/info.txt"], data="encrypted data")
    enc_id = Tree.build(enc_pkg).identity
    # other encrypted packages (publishing one stores a fresh key under its identity)
    enc_other = probe_package(pub / "enc2", args=["cat:/data/info.txt"], data="other data")
    oci_pkg = probe_package(pub / "oci", args=["cat:/data/info.txt"], data="oci data")
    oci_id = Tree.build(oci_pkg).identity
    for name in ("pub", "other"):
        r = env.run("key", "create", "--out", pub / f"{name}.pem")
        assert r.returncode == 0, r.stderr
    # the policy (root/host/steward/steward.toml) names the key relative to its own file
    policy = sim_policy(env, {default_key_resource(enc_id): [enc_id],
                               default_key_resource(oci_id): [oci_id]}).replace(
        "\n[resources]", '\n[workload]\nsigners = ["../../publisher/pub.pub.pem"]\n\n[resources]')
    stack: list[Steward | RegistryServer] = []
    try:
        s = Steward(env, "steward", policy)
        stack.append(s)
        reg = RegistryServer(root / "host" / "registry")
        stack.append(reg)
        env.env["ENARX_REGISTRY_TOKEN"] = reg.token("alice")
        for args in (("user", "register", f"{reg.url}/alice"),
                     ("repo", "register", f"{reg.url}/alice/app")):
            r = env.run(*args)
            assert r.returncode == 0, r.stderr
        w = World(env, s, reg, pub, oci_pkg)
        enc = w.encrypt()
        for tag, sign, package in (("1.0.0", ("--sign", pub / "pub.pem"), pkg),
                                   ("2.0.0", ("--sign", pub / "other.pem"), pkg),
                                   ("3.0.0", (), pkg),
                                   ("4.0.0", (*enc, "--sign", pub / "pub.pem"), enc_pkg),
                                   ("5.0.0", (*enc, "--sign", pub / "other.pem"), enc_other)):
            r = env.run("package", "publish", *sign, f"{reg.url}/alice/app:{tag}", package)
            assert r.returncode == 0, r.stderr
        yield w
    finally:
        for item in reversed(stack):
            item.stop()


def test_a_package_signed_by_the_policys_signer_runs(world: World) -> None:
    code, out, err = world.deploy("1.0.0")
    assert code == 0, err
    assert out == f"cat /data/info.txt {DATA_MARKER}\n"


def test_an_encrypted_package_signed_by_the_policys_signer_gets_its_key_and_runs(
    world: World,
) -> None:
    code, out, err = world.deploy("4.0.0")
    assert code == 0, err
    assert out == "cat /data/info.txt encrypted data\n"


@pytest.mark.parametrize(("tag", "why"), [
    ("2.0.0", "no signature verifies with a signer key the policy names"),
    ("3.0.0", "presented no signature"),
    ("5.0.0", "no signature verifies with a signer key the policy names"),
])
def test_unsigned_or_wrongly_signed_packages_are_refused_and_never_run(
    world: World, tag: str, why: str,
) -> None:
    code, out, err = world.deploy(tag)
    assert code == 4, err
    assert out == ""  # the guest printed nothing: it never ran
    assert "steward.refused" in err and "  - workload.signer: " in err and why in err, err
    assert "Traceback" not in err


def test_the_keeps_own_signer_check_still_applies(world: World) -> None:
    """--signer with the other key: refused by the Keep before it even attests."""
    code, out, err = world.deploy("1.0.0", "--signer",
                                  str(world.pub / "other.pub.pem"))
    assert code == 4 and out == "", err
    assert "package.signature" in err and "workload.signer" not in err


@pytest.fixture(scope="module")
def oci(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry with the same packages: ``oci://HOST/alice/app`` (SPEC prefix)."""
    reg = DockerRegistry(tmp_path_factory.mktemp("oci-signers"))
    try:
        base = f"oci://{reg.host}/alice/app"
        pkg, pub = world.pub / "pkg", world.pub
        for tag, args, package in (("1.0.0", ("--sign", pub / "pub.pem"), pkg),
                                   ("2.0.0", ("--sign", pub / "other.pem"), pkg),
                                   ("3.0.0", (), pkg),
                                   ("4.0.0", (*world.encrypt(), "--sign", pub / "pub.pem"),
                                    world.oci_pkg)):
            r = world.env.run("package", "publish", *args, f"{base}:{tag}", package)
            assert r.returncode == 0, r.stderr
        yield base
    finally:
        reg.stop()


def test_oci_packages_signed_by_the_policys_signer_run(world: World, oci: str) -> None:
    code, out, err = world.deploy("", spec=f"{oci}:1.0.0")
    assert code == 0, err
    assert out == f"cat /data/info.txt {DATA_MARKER}\n"
    code, out, err = world.deploy("", spec=f"{oci}:4.0.0")  # encrypted
    assert code == 0, err
    assert out == "cat /data/info.txt oci data\n"


@pytest.mark.parametrize(("tag", "why"), [
    ("2.0.0", "no signature verifies with a signer key the policy names"),
    ("3.0.0", "presented no signature"),
])
def test_oci_packages_unsigned_or_wrongly_signed_are_refused(world: World, oci: str,
                                                             tag: str, why: str) -> None:
    code, out, err = world.deploy("", spec=f"{oci}:{tag}")
    assert code == 4 and out == "", err
    assert "  - workload.signer: " in err and why in err, err


def test_enarx_run_with_such_a_steward_is_refused(world: World) -> None:
    """A local module carries no signature: a steward requiring signers refuses it."""
    r = world.env.run("run", "--backend", "sim", "--steward", world.steward.url,
                      "--steward-ca", world.steward.ca, world.pub / "pkg" / "main.wasm",
                      "cat:/x")
    assert r.returncode == 4 and r.stdout == "", r.stderr
    assert "  - workload.signer: " in r.stderr and "presented no signature" in r.stderr


def test_an_enarx_toml_cannot_name_a_signer(world: World, tmp_path: Path) -> None:
    """docs/deploy.md "Requiring a signer": no such setting; the strict schema says so."""
    (tmp_path / "Enarx.toml").write_text('signer = "release.pub.pem"\n')
    r = world.env.run("run", "--backend", "nil", "--wasmcfgfile", tmp_path / "Enarx.toml",
                      world.pub / "pkg" / "main.wasm")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "signer: unknown key" in r.stderr and "Traceback" not in r.stderr
