"""enarx.keep.release against a real steward on 127.0.0.1: a resource reaches only the Keep
that attested, as a JWE to its one-time key; a JWE recorded from another attestation (a
replay) or forged does not open; ungranted and missing resources are typed refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from enarx.errors import EnarxError
from enarx.keep.attest import Attested, StewardTarget, attest_keep
from enarx.keep.release import (
    ResourceRefused,
    fetch_resource,
    open_resource,
    release_secrets,
)
from enarx.platform.sim import SimBackend
from enarx.steward.kbs import encrypt_resource
from tests.keep.deploykit import Env, Steward, make_env, sim_policy, steward

ME = "sha384:" + "1a" * 48
OTHER = "sha384:" + "2b" * 48


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Iterator[Env]:
    sim = tmp_path_factory.getbasetemp() / "sim-state"
    e = make_env(tmp_path_factory.mktemp("release"), module_cache, sim)
    old = os.environ.get("ENARX_SIM_DIR")
    os.environ["ENARX_SIM_DIR"] = str(sim)  # the in-process sim backend uses the same chain
    try:
        yield e
    finally:
        if old is None:
            os.environ.pop("ENARX_SIM_DIR", None)
        else:
            os.environ["ENARX_SIM_DIR"] = old


@pytest.fixture(scope="module")
def srv(env: Env) -> Iterator[Steward]:
    for s in steward(env, "release", sim_policy(env, {"app/key/*": [ME], "app/bin/nul": [ME],
                                                      "app/key/missing": [ME]})):
        s.put("app/key/db", b"db-password")
        s.put("app/key/api", b"api-token")
        s.put("app/bin/nul", b"a\0b")
        s.put("app/other/x", b"not for me")
        yield s


def _attest(s: Steward, workload: str = ME) -> tuple[StewardTarget, Attested]:
    target = StewardTarget(url=s.url, ca_pem=s.ca.read_bytes())
    return target, attest_keep(target, SimBackend(), workload)


def test_a_granted_resource_is_released_to_the_attested_key(srv: Steward) -> None:
    target, att = _attest(srv)
    assert fetch_resource(target, att, "app/key/db") == b"db-password"


def test_secrets_become_env_and_files(srv: Steward) -> None:
    target, att = _attest(srv)
    entries = [SimpleNamespace(resource="app/key/db", env="DB", file="db"),
               SimpleNamespace(resource="app/key/api", env=None, file="api")]
    out = release_secrets(target, att, entries)
    assert out.env == [("DB", "db-password")]
    assert out.files == {"db": b"db-password", "api": b"api-token"}
    assert "db-password" not in repr(out)  # values never appear in reprs (logs)


def test_a_replayed_jwe_from_another_attestation_does_not_open(srv: Steward) -> None:
    _, first = _attest(srv)
    _, second = _attest(srv)
    recorded = json.dumps(encrypt_resource(b"db-password", first_jwk(first))).encode()
    assert open_resource(recorded, first, "app/key/db") == b"db-password"
    with pytest.raises(ResourceRefused, match="replayed or forged") as e:
        open_resource(recorded, second, "app/key/db")
    assert e.value.exit_code == 4


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"protected": "x"}',
                                  b"[" * 100_000])
def test_a_forged_or_garbled_answer_is_refused(srv: Steward, body: bytes) -> None:
    _, att = _attest(srv)
    with pytest.raises(ResourceRefused):
        open_resource(body, att, "app/key/db")


def test_an_ungranted_resource_is_refused(srv: Steward) -> None:
    target, att = _attest(srv)
    with pytest.raises(ResourceRefused, match="not granted") as e:
        fetch_resource(target, att, "app/other/x")
    assert e.value.exit_code == 4


def test_another_workload_gets_nothing(srv: Steward) -> None:
    target, att = _attest(srv, OTHER)
    with pytest.raises(ResourceRefused, match="not granted"):
        fetch_resource(target, att, "app/key/db")


def test_a_missing_resource_is_refused(srv: Steward) -> None:
    target, att = _attest(srv)
    with pytest.raises(ResourceRefused, match="not stored"):
        fetch_resource(target, att, "app/key/missing")


def test_a_bad_path_is_refused_before_any_request(srv: Steward) -> None:
    target, att = _attest(srv)
    with pytest.raises(ResourceRefused, match="not a steward resource path"):
        fetch_resource(target, att, "../etc/passwd")


def test_a_nul_byte_cannot_become_an_env_var(srv: Steward) -> None:
    target, att = _attest(srv)
    with pytest.raises(EnarxError, match="NUL byte") as e:
        release_secrets(target, att, [SimpleNamespace(resource="app/bin/nul", env="X",
                                                      file=None)])
    assert "a\0b" not in e.value.message
    # as a file it is delivered byte for byte
    out = release_secrets(target, att, [SimpleNamespace(resource="app/bin/nul", env=None,
                                                        file="x")])
    assert out.files == {"x": b"a\0b"}


def test_a_stopped_steward_is_a_clear_error(env: Env) -> None:
    s = Steward(env, "stopped", sim_policy(env, {"app/key/db": [ME]}))
    target, att = _attest(s)
    s.stop()
    with pytest.raises(EnarxError, match=r"kbs/v0/resource/app/key/db") as e:
        fetch_resource(target, att, "app/key/db", timeout=5)
    assert e.value.exit_code == 1


def first_jwk(att: Attested) -> dict[str, str]:
    from enarx.keep.attest import tee_pubkey_jwk

    return tee_pubkey_jwk(att.key)


class _FlakyRelay:
    """127.0.0.1 TCP relay to the real steward that drops its first ``drops`` connections
    (a flaky network), then forwards."""

    def __init__(self, target: tuple[str, int], drops: int) -> None:
        import socket
        import threading

        self.target, self.drops, self.accepted = target, drops, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import socket
        import threading

        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drops:
                c.close()
                continue
            u = socket.create_connection(self.target)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: object, b: object) -> None:
        import socket

        assert isinstance(a, socket.socket) and isinstance(b, socket.socket)
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                s.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(("drops", "released"), [(2, True), (3, False)])
def test_a_flaky_connection_is_retried_a_bounded_number_of_times(
    srv: Steward, drops: int, released: bool,
) -> None:
    target, att = _attest(srv)
    host, _, port = srv.url.rsplit("/", 1)[-1].rpartition(":")
    relay = _FlakyRelay((host, int(port)), drops)
    try:
        via = StewardTarget(url=f"https://127.0.0.1:{relay.port}", ca_pem=target.ca_pem)
        if released:
            assert fetch_resource(via, att, "app/key/db") == b"db-password"
        else:
            with pytest.raises(EnarxError, match="kbs/v0/resource/app/key/db"):
                fetch_resource(via, att, "app/key/db")
        assert relay.accepted == 3  # the first attempt and two retries, no more
    finally:
        relay.close()
