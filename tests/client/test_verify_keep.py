"""`enarx verify-keep` and its Python API (enarx.client): a real TLS server on 127.0.0.1
presenting a steward-style certificate with real sim evidence inside, and every way that
certificate can be wrong."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.client import KeepReport, verify_certificate, verify_keep
from enarx.errors import AttestationError, ChainInvalid, ResourceError
from enarx.keep.attest import tee_pubkey_jwk
from enarx.platform.sim import SimBackend
from enarx.steward.ca import StewardCA
from enarx.steward.extensions import CmwEvidence, cmw_extension, workload_extension
from enarx.steward.kbs import expected_report_data
from tests.cliutil import RunEnarx

WORKLOAD = "sha384:" + "ab" * 48
OTHER = "sha384:" + "cd" * 48


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    # Shared with the other sim tests, so the RSA-4096 test chain is made once per session.
    return SimBackend(tmp_path_factory.getbasetemp() / "sim-state")


@pytest.fixture(scope="module")
def ca() -> StewardCA:
    return StewardCA.create("test steward CA")


@dataclass
class Served:
    host: str
    port: int
    leaf: x509.Certificate


def keep_cert(ca: StewardCA, sim: SimBackend, *, workload: str | None = WORKLOAD,
              cert_workload: str | None = WORKLOAD, bind_other_key: bool = False,
              tamper_runtime: bool = False, evidence: bool = True
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A Keep key and the certificate a steward would issue for it (as service.py does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    bound = ec.generate_private_key(ec.SECP256R1()) if bind_other_key else key
    rd = {"nonce": "bm9uY2U=", "tee-pubkey": tee_pubkey_jwk(bound)}
    if workload is not None:
        rd["workload"] = workload
    runtime = {"tee-pubkey": rd["tee-pubkey"], "nonce": rd["nonce"], "additional-evidence": ""}
    if workload is not None:
        runtime["workload"] = workload
    runtime_json = rfc8785.dumps(runtime)
    ev = sim.evidence(expected_report_data(rd))
    if tamper_runtime:
        runtime_json = runtime_json.replace(b"bm9uY2U=", b"b3RoZXI=")
    exts = [workload_extension(cert_workload)]
    if evidence:
        exts.append(cmw_extension(CmwEvidence("snp", ev.blob, ev.certs, runtime_json)))
    leaf = ca.issue(key.public_key(), ["127.0.0.1"], dt.timedelta(hours=1), exts)
    return key, leaf


Serve = Callable[[ec.EllipticCurvePrivateKey, x509.Certificate, Path], "Served"]


@pytest.fixture
def serve(ca: StewardCA) -> Iterator[Serve]:
    servers: list[tuple[socket.socket, threading.Thread]] = []

    def start(key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate, tmp: Path) -> Served:
        pem = tmp / f"keep{len(servers)}.pem"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
                        + leaf.public_bytes(serialization.Encoding.PEM) + ca.cert_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem)
        ls = socket.create_server(("127.0.0.1", 0))

        def loop() -> None:
            while True:
                try:
                    conn, _ = ls.accept()
                except OSError:
                    return
                try:
                    with ctx.wrap_socket(conn, server_side=True) as s:
                        s.recv(1)
                except (OSError, ssl.SSLError):
                    conn.close()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        servers.append((ls, t))
        return Served("127.0.0.1", ls.getsockname()[1], leaf)

    yield start
    for ls, t in servers:
        with contextlib.suppress(OSError):
            ls.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        ls.close()
        t.join(5)


def test_a_genuine_keep_certificate_verifies_and_reports_what_was_attested(
    ca: StewardCA, sim: SimBackend, serve: Serve, tmp_path: Path,
) -> None:
    srv = serve(*keep_cert(ca, sim), tmp_path)
    report = verify_keep(srv.host, srv.port, ca.cert_pem, WORKLOAD,
                         trust_roots=[sim.ark_pem()])
    assert isinstance(report, KeepReport)
    assert report.platform == "snp"
    assert report.measurement == sim.measurement.hex()
    assert report.tcb_status == "UpToDate"
    assert report.workload == WORKLOAD
    assert report.trust_root == "explicit"  # the sim ARK, not AMD's
    assert report.serial == f"{srv.leaf.serial_number:x}"


@pytest.mark.parametrize(("kw", "check"), [
    ({"bind_other_key": True}, "keep.binding"),
    ({"tamper_runtime": True}, "keep.binding"),
    ({"cert_workload": OTHER}, "keep.workload"),
    ({"evidence": False}, "keep.evidence"),
])
def test_a_certificate_that_does_not_prove_itself_is_refused(
    kw: dict[str, bool | str], check: str, ca: StewardCA, sim: SimBackend, serve: Serve,
    tmp_path: Path,
) -> None:
    srv = serve(*keep_cert(ca, sim, **kw), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(AttestationError) as e:
        verify_keep(srv.host, srv.port, ca.cert_pem, trust_roots=[sim.ark_pem()])
    assert e.value.check == check
    assert e.value.exit_code == 4


def test_another_workload_another_ca_or_an_untrusted_root_fail(
    ca: StewardCA, sim: SimBackend, serve: Serve, tmp_path: Path,
) -> None:
    srv = serve(*keep_cert(ca, sim), tmp_path)
    with pytest.raises(AttestationError) as e:
        verify_keep(srv.host, srv.port, ca.cert_pem, OTHER, trust_roots=[sim.ark_pem()])
    assert e.value.check == "keep.workload" and e.value.expected == OTHER
    with pytest.raises(ChainInvalid) as e2:
        verify_keep(srv.host, srv.port, StewardCA.create().cert_pem, trust_roots=[sim.ark_pem()])
    assert e2.value.check == "keep.tls"
    with pytest.raises(ChainInvalid) as e3:  # the sim ARK is no vendor root
        verify_keep(srv.host, srv.port, ca.cert_pem)
    assert e3.value.check == "snp.chain.root"


def test_nothing_listening_is_a_resource_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(ResourceError):
        verify_keep("127.0.0.1", port, StewardCA.create().cert_pem)


def test_cli_prints_json_and_exits_0_or_4(
    enarx: RunEnarx, ca: StewardCA, sim: SimBackend, serve: Serve, tmp_path: Path,
) -> None:
    srv = serve(*keep_cert(ca, sim), tmp_path)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ark.pem").write_bytes(sim.ark_pem())
    base = ["verify-keep", f"{srv.host}:{srv.port}", "--ca", tmp_path / "ca.pem",
            "--trust-root", tmp_path / "ark.pem"]
    r = enarx(*base, "--workload", WORKLOAD, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["platform"] == "snp" and out["workload"] == WORKLOAD
    assert out["measurement"] == sim.measurement.hex() and out["tcb_status"] == "UpToDate"
    r = enarx(*base, "--workload", OTHER)
    assert r.returncode == 4
    assert b"keep.workload: the Keep runs another workload" in r.stderr
    r = enarx(*base)
    assert r.returncode == 0 and b"verified Keep at" in r.stdout
    assert b"not to a vendor root" in r.stderr
    r = enarx(*base, "--workload", "sha384:nothex", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["type"] == "UsageError"
    r = enarx("verify-keep", "no-port", "--ca", tmp_path / "ca.pem")
    assert r.returncode == 2 and b"is not HOST:PORT" in r.stderr


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=400))
def test_any_certificate_bytes_give_a_typed_error(blob: bytes) -> None:
    from enarx.errors import EnarxError

    with pytest.raises(EnarxError):
        verify_certificate(blob, _CA.cert_pem)


_CA = StewardCA.create("fuzz CA")
