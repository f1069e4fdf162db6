"""``enarx steward secret put`` against a real ``enarx steward serve`` on 127.0.0.1: the stored
bytes come back to an attested sim Keep (as a JWE to its key) and nowhere else; a wrong token,
a bad path or an untrusted steward are typed errors that never echo the token."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enarx.platform.sim import SimBackend
from enarx.steward import kbs
from tests.cliutil import RunEnarx
from tests.steward.kbsflow import WORKLOAD, attest_body, new_key, policy_text, sim_state
from tests.steward.test_server import Steward


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


@pytest.fixture(scope="module")
def steward(tmp_path_factory: pytest.TempPathFactory, sim: SimBackend) -> Iterator[Steward]:
    d = tmp_path_factory.mktemp("steward-secret")
    (d / "sim-ark.pem").write_bytes(sim.ark_pem())
    (d / "steward.toml").write_text(policy_text(
        Path("sim-ark.pem"), extra=f'[resources]\n"app/key/db" = ["{WORKLOAD}"]'))
    s = Steward(["--policy", str(d / "steward.toml"), "--state-dir", str(d / "state")])
    s.state = d / "state"  # type: ignore[attr-defined]
    yield s
    s.stop()


def _args(steward: Steward, token_file: Path | None = None) -> list[str]:
    state: Path = steward.state  # type: ignore[attr-defined]
    return ["--steward", steward.url, "--steward-ca", str(state / "ca.crt"),
            "--admin-token-file", str(token_file or state / "admin-token")]


def _fetch_as_keep(steward: Steward, sim: SimBackend, path: str) -> tuple[int, bytes]:
    state: Path = steward.state  # type: ignore[attr-defined]
    ctx = ssl.create_default_context(cafile=str(state / "ca.crt"))
    key = new_key()
    with httpx.Client(base_url=steward.url, verify=ctx, timeout=30) as c:
        r = c.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": {}})
        assert r.status_code == 200, r.text
        r = c.post("/kbs/v0/attest", json=attest_body(sim, r.json()["nonce"], key,
                                                      workload=WORKLOAD))
        assert r.status_code == 200, r.text
        r = c.get(f"/kbs/v0/resource/{path}")
        if r.status_code != 200:
            return r.status_code, b""
        return 200, kbs.decrypt_resource(r.json(), key)


def test_put_reaches_an_attested_keep(enarx: RunEnarx, steward: Steward, sim: SimBackend,
                                      tmp_path: Path) -> None:
    secret = tmp_path / "db.key"
    secret.write_bytes(b"MARKER-db-password\x00\xff")
    r = enarx("steward", "secret", "put", "app/key/db", "--file", str(secret), *_args(steward))
    assert r.returncode == 0, r.stderr.decode()
    assert "stored resource app/key/db" in r.stdout.decode()
    assert _fetch_as_keep(steward, sim, "app/key/db") == (200, b"MARKER-db-password\x00\xff")
    # put replaces
    secret.write_bytes(b"second")
    r = enarx("steward", "secret", "put", "app/key/db", "--file", str(secret), *_args(steward))
    assert r.returncode == 0, r.stderr.decode()
    assert _fetch_as_keep(steward, sim, "app/key/db") == (200, b"second")


def test_wrong_token_is_refused_and_not_echoed(enarx: RunEnarx, steward: Steward,
                                               tmp_path: Path) -> None:
    bad = tmp_path / "token"
    bad.write_text("not-the-admin-token-SECRETISH\n")
    secret = tmp_path / "s"
    secret.write_bytes(b"x")
    r = enarx("steward", "secret", "put", "app/key/other", "--file", str(secret),
              *_args(steward, bad))
    assert r.returncode == 2
    assert "refused the admin token" in r.stderr.decode() and "hint:" in r.stderr.decode()
    assert "SECRETISH" not in r.stderr.decode() + r.stdout.decode()
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.parametrize("path", ["app/key", "app/key/db/x", "../key/db", "app/.k/db", ""])
def test_bad_resource_path_is_usage_error(enarx: RunEnarx, steward: Steward, tmp_path: Path,
                                          path: str) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"x")
    r = enarx("steward", "secret", "put", path, "--file", str(secret), *_args(steward))
    assert r.returncode == 2, r.stderr.decode()
    assert "invalid resource path" in r.stderr.decode() and "hint:" in r.stderr.decode()


def test_untrusted_steward_certificate(enarx: RunEnarx, steward: Steward, sim: SimBackend,
                                       tmp_path: Path) -> None:
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(sim.ark_pem())  # a CA that did not sign the steward's certificate
    secret = tmp_path / "s"
    secret.write_bytes(b"x")
    args = _args(steward)
    args[3] = str(other_ca)
    r = enarx("steward", "secret", "put", "app/key/db", "--file", str(secret), *args)
    assert r.returncode == 1
    assert "does not chain to --steward-ca" in r.stderr.decode()
    assert "Traceback" not in r.stderr.decode()


def test_plain_http_refused_off_loopback(enarx: RunEnarx, steward: Steward,
                                         tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"x")
    args = _args(steward)
    args[1] = "http://192.0.2.1:3000"
    r = enarx("steward", "secret", "put", "app/key/db", "--file", str(secret), *args)
    assert r.returncode == 2
    assert "plain http" in r.stderr.decode()


def test_steward_down(enarx: RunEnarx, steward: Steward, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"x")
    args = _args(steward)
    args[1] = "https://127.0.0.1:1"
    r = enarx("steward", "secret", "put", "app/key/db", "--file", str(secret), *args)
    assert r.returncode == 1
    assert "cannot reach the steward at https://127.0.0.1:1" in r.stderr.decode()


def test_delete(enarx: RunEnarx, steward: Steward, sim: SimBackend, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"to-delete")
    assert enarx("steward", "secret", "put", "app/key/db", "--file", str(secret),
                 *_args(steward)).returncode == 0
    r = enarx("steward", "secret", "delete", "app/key/db", *_args(steward))
    assert r.returncode == 0, r.stderr.decode()
    assert _fetch_as_keep(steward, sim, "app/key/db")[0] != 200
    r = enarx("steward", "secret", "delete", "app/key/db", *_args(steward))
    assert r.returncode == 2 and "holds no resource app/key/db" in r.stderr.decode()
