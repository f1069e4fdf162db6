"""``enarx package publish --encrypt`` with a real steward and a real registry on 127.0.0.1.

The registry's storage and the fetched package hold ciphertext only; the content key sits
in the steward, which releases it (as a JWE) only to a Keep attesting the package's workload
identity; with that key the fetched ciphertext decrypts to the original files."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enarx.package import crypt
from enarx.platform.sim import SimBackend
from enarx.steward import kbs
from tests.cli.test_package import Cli, files_of, independent_identity, make_pkg
from tests.registry.server import RegistryServer
from tests.steward.kbsflow import OTHER_WORKLOAD, attest_body, new_key, policy_text, sim_state
from tests.steward.test_server import Steward

MARKER = "PLAINTEXT-MARKER-7f3a"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pkg(tmp_path_factory.mktemp("src") / "pkg", marker=MARKER)


@pytest.fixture(scope="module")
def steward(tmp_path_factory: pytest.TempPathFactory, sim: SimBackend,
            pkg: Path) -> Iterator[Steward]:
    identity = independent_identity(pkg)
    d = tmp_path_factory.mktemp("steward")
    (d / "sim-ark.pem").write_bytes(sim.ark_pem())
    path = crypt.default_key_resource(identity)
    (d / "steward.toml").write_text(policy_text(
        Path("sim-ark.pem"), extra=f'[resources]\n"{path}" = ["{identity}"]'))
    s = Steward(["--policy", str(d / "steward.toml"), "--state-dir", str(d / "state")])
    s.state = d / "state"  # type: ignore[attr-defined]
    yield s
    s.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    s = RegistryServer(tmp_path_factory.mktemp("registry") / "state", tls=True)
    yield s
    s.stop()


def _key_as_keep(steward: Steward, sim: SimBackend, path: str, workload: str) -> bytes | int:
    state: Path = steward.state  # type: ignore[attr-defined]
    key = new_key()
    with httpx.Client(base_url=steward.url, timeout=30,
                      verify=ssl.create_default_context(cafile=str(state / "ca.crt"))) as c:
        r = c.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": {}})
        r = c.post("/kbs/v0/attest", json=attest_body(sim, r.json()["nonce"], key,
                                                      workload=workload))
        assert r.status_code == 200, r.text
        r = c.get(f"/kbs/v0/resource/{path}")
        if r.status_code != 200:
            return r.status_code
        return kbs.decrypt_resource(r.json(), key)


def test_encrypted_publish_fetch_and_key_release(registry: RegistryServer, steward: Steward,
                                                 sim: SimBackend, pkg: Path,
                                                 tmp_path: Path) -> None:
    cli = Cli(registry, tmp_path)
    token = registry.token("alice")
    assert cli("user", "register", f"{cli.host}/alice", token=token).returncode == 0
    assert cli("repo", "register", f"{cli.host}/alice/enc", token=token).returncode == 0
    state: Path = steward.state  # type: ignore[attr-defined]
    spec = f"{cli.host}/alice/enc:1.0.0"
    r = cli("package", "publish", spec, pkg, "--encrypt", "--steward", steward.url,
            "--steward-ca", state / "ca.crt", "--admin-token-file", state / "admin-token",
            "--json", token=token)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    identity = independent_identity(pkg)
    assert result["identity"] == identity and result["encrypted"] is True
    assert result["key_resource"] == crypt.default_key_resource(identity)
    assert result["tree"] != identity
    admin_token = (state / "admin-token").read_text().strip()
    assert admin_token not in r.stdout + r.stderr

    # the registry's storage holds no plaintext
    for f in registry.state.rglob("*"):
        if f.is_file():
            assert MARKER.encode() not in f.read_bytes(), f

    r = cli("package", "info", spec, "--json")
    info = json.loads(r.stdout)
    assert info["encrypted"] is True and info["identity"] == identity
    assert info["key"] == result["key_resource"]

    out = tmp_path / "out"
    r = cli("package", "fetch", spec, "--out", out)
    assert r.returncode == 0, r.stderr
    fetched = files_of(out)
    assert all(MARKER.encode() not in b for b in fetched.values())

    # only a Keep attesting this workload gets the key; with it the ciphertext decrypts
    assert _key_as_keep(steward, sim, result["key_resource"], OTHER_WORKLOAD) == 401
    key = _key_as_keep(steward, sim, result["key_resource"], identity)
    assert isinstance(key, bytes) and len(key) == 32
    plain = crypt.decrypt_package(fetched, key, fetched[crypt.MANIFEST_NAME])
    assert plain == files_of(pkg)


def test_encrypt_needs_the_steward(registry: RegistryServer, steward: Steward, pkg: Path,
                                   tmp_path: Path) -> None:
    cli = Cli(registry, tmp_path)
    token = registry.token("carol")
    assert cli("user", "register", f"{cli.host}/carol", token=token).returncode == 0
    assert cli("repo", "register", f"{cli.host}/carol/enc", token=token).returncode == 0
    spec = f"{cli.host}/carol/enc:1.0.0"
    r = cli("package", "publish", spec, pkg, "--encrypt", token=token)
    assert r.returncode == 2 and "--encrypt needs --steward" in r.stderr
    bad = tmp_path / "bad-token"
    bad.write_text("wrong\n")
    state: Path = steward.state  # type: ignore[attr-defined]
    r = cli("package", "publish", spec, pkg, "--encrypt", "--steward", steward.url,
            "--steward-ca", state / "ca.crt", "--admin-token-file", bad, token=token)
    assert r.returncode == 2 and "refused the admin token" in r.stderr
    # the key upload failed first, so nothing was published
    r = cli("repo", "info", f"{cli.host}/carol/enc", "--json")
    assert json.loads(r.stdout)["tags"] == []
