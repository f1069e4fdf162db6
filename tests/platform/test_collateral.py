"""Fetching VCEKs (AMD KDS) and DCAP collateral (Intel PCS/PCCS) through a real HTTP server on
127.0.0.1 that serves the real vectors the way the vendors' services do."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from enarx.attestation.snp import parse_report
from enarx.attestation.snp.certs import load_cert
from enarx.errors import SignatureInvalid
from enarx.platform.collateral import (
    CollateralFetchError,
    Fetcher,
    fetch_dcap_collateral,
    fetch_vcek,
)
from tests.attestation.snp_support import load_snp
from tests.cliutil import RunEnarx
from tests.quiethttp import QuietThreadingHTTPServer
from tests.vectors import load_manifest, vector_dir


@dataclass
class Route:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass
class FakeVendor:
    """A real HTTP server; ``routes`` maps path+query to a response, ``seen`` logs requests."""

    url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    state = FakeVendor()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append(self.path)
            route = state.routes.get(self.path, Route(b"not found", status=404))
            self.send_response(route.status)
            for k, v in route.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _pem_to_der(pem: bytes) -> bytes:
    return load_cert(pem, "test").der  # our loader: it silences the serial-0 warning


def _serve_kds(vendor: FakeVendor, name: str, vcek_from: str | None = None) -> str:
    """Serve the VCEK for vector ``name`` at the KDS path its report implies."""
    folder = vector_dir("snp", name)
    report = parse_report((folder / "report.bin").read_bytes())
    tcb = report.tcb("reported", "Milan")
    path = (f"/vcek/v1/Milan/{report.chip_id.hex()}?blSPL={tcb.bootloader}&teeSPL={tcb.tee}"
            f"&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}")
    source = vector_dir("snp", vcek_from or name)
    vendor.routes[path] = Route(_pem_to_der((source / "vcek.pem").read_bytes()))
    chain = (folder / "ask.pem").read_bytes() + (folder / "ark.pem").read_bytes()
    vendor.routes["/vcek/v1/Milan/cert_chain"] = Route(chain)
    return path


def test_snp_vcek_fetch_verifies_writes_and_caches(
    vendor: FakeVendor, enarx: RunEnarx, tmp_path: Path
) -> None:
    path = _serve_kds(vendor, "ms-milan-v3")
    report = vector_dir("snp", "ms-milan-v3") / "report.bin"
    out, cache = tmp_path / "vcek.pem", tmp_path / "cache"
    args = ("platform", "snp", "vcek", report, "--kds-url", vendor.url, "--out", out,
            "--cache-dir", cache, "--json")
    r = enarx(*args)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["downloads"] == 2
    assert path in vendor.seen  # chip ID and REPORTED_TCB went into the KDS query
    expected = (vector_dir("snp", "ms-milan-v3") / "vcek.pem").read_bytes()
    assert _pem_to_der(out.read_bytes()) == _pem_to_der(expected)

    # Second run: served from the cache, nothing downloaded.
    r = enarx(*args)
    assert r.returncode == 0 and json.loads(r.stdout)["downloads"] == 0
    r = enarx(*args, "--refresh")
    assert json.loads(r.stdout)["downloads"] == 2

    # The fetched VCEK verifies the report through the ordinary verifier.
    verify = enarx("attest", "verify", report, "--platform", "snp", "--cert", out, "--json")
    assert verify.returncode == 0, verify.stdout


def test_snp_vcek_from_wrong_chip_is_refused_and_not_cached(
    vendor: FakeVendor, tmp_path: Path
) -> None:
    from enarx.platform.collateral import fetch_vcek

    _serve_kds(vendor, "ms-milan-v3", vcek_from="teekit-gcp-milan-v5")
    report = (vector_dir("snp", "ms-milan-v3") / "report.bin").read_bytes()
    fetcher = Fetcher(tmp_path / "cache")
    with pytest.raises(SignatureInvalid):
        fetch_vcek(report, fetcher, kds_url=vendor.url)
    fetcher2 = Fetcher(tmp_path / "cache")
    with pytest.raises(SignatureInvalid):
        fetch_vcek(report, fetcher2, kds_url=vendor.url)
    assert fetcher2.requests >= 1  # the bad VCEK was not kept


def test_snp_vcek_unknown_chip_is_a_clear_error(
    vendor: FakeVendor, enarx: RunEnarx, tmp_path: Path
) -> None:
    report = vector_dir("snp", "ms-milan-v3") / "report.bin"
    r = enarx("platform", "snp", "vcek", report, "--kds-url", vendor.url,
              "--cache-dir", tmp_path, "--out", tmp_path / "v.pem")
    assert r.returncode == 5
    assert b"HTTP 404" in r.stderr and b"hint:" in r.stderr
    assert not (tmp_path / "v.pem").exists()


def _serve_pcs(vendor: FakeVendor, kind: str, name: str) -> None:
    folder = vector_dir(kind, name)
    m = load_manifest(kind, name)
    fmspc = m["evidence"]["fmspc"].upper()
    ca = "processor" if "Processor" in m["evidence"].get("pck_ca", "Processor") else "platform"
    quoted = lambda f: urllib.parse.quote((folder / f).read_text())  # noqa: E731
    vendor.routes[f"/{kind}/certification/v4/tcb?fmspc={fmspc}"] = Route(
        (folder / "tcb_info.json").read_bytes(),
        {"TCB-Info-Issuer-Chain": quoted("tcb_info_issuer_chain.pem")},
    )
    vendor.routes[f"/{kind}/certification/v4/qe/identity"] = Route(
        (folder / "qe_identity.json").read_bytes(),
        {"SGX-Enclave-Identity-Issuer-Chain": quoted("qe_identity_issuer_chain.pem")},
    )
    crl_chain = folder / "pck_crl_issuer_chain.pem"
    vendor.routes[f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"] = Route(
        # PCCS answers with hex; Intel PCS with DER: both must work.
        (folder / "pck_crl.der").read_bytes().hex().encode(),
        {"SGX-PCK-CRL-Issuer-Chain": quoted(crl_chain.name if crl_chain.exists()
                                            else "tcb_info_issuer_chain.pem")},
    )
    vendor.routes["/IntelSGXRootCA.der"] = Route((folder / "root_ca_crl.der").read_bytes())


def test_sgx_cache_writes_a_collateral_dir_that_verifies(
    vendor: FakeVendor, enarx: RunEnarx, tmp_path: Path
) -> None:
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    quote = vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin"
    out = tmp_path / "collateral"
    r = enarx("platform", "sgx", "cache", quote, "--pcs-url", vendor.url, "--out", out,
              "--root-crl-url", f"{vendor.url}/IntelSGXRootCA.der", "--cache-dir",
              tmp_path / "cache", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["downloads"] == 4
    folder = vector_dir("sgx", "dcapqvl-sgx-v3")
    assert (out / "tcb_info.json").read_bytes() == (folder / "tcb_info.json").read_bytes()
    assert (out / "pck_crl.der").read_bytes() == (folder / "pck_crl.der").read_bytes()
    m = load_manifest("sgx", "dcapqvl-sgx-v3")
    v = enarx("attest", "verify", quote, "--platform", "sgx", "--collateral", out,
              "--at", m["verify_at"], "--json")
    assert v.returncode == 0, v.stdout
    assert json.loads(v.stdout)["tcb_status"] == m["expected"]["tcb_status"]


def test_tdx_quote_uses_tdx_endpoints(vendor: FakeVendor, tmp_path: Path) -> None:
    _serve_pcs(vendor, "tdx", "dcapqvl-tdx-v4")
    quote = (vector_dir("tdx", "dcapqvl-tdx-v4") / "quote.bin").read_bytes()
    files = fetch_dcap_collateral(quote, Fetcher(tmp_path), pcs_url=vendor.url,
                                  root_crl_url=f"{vendor.url}/IntelSGXRootCA.der")
    assert any(p.startswith("/tdx/certification/v4/tcb?fmspc=") for p in vendor.seen)
    assert b"-----BEGIN CERTIFICATE-----" in files["tcb_info_issuer_chain.pem"]


def test_expired_collateral_is_not_served_from_cache(vendor: FakeVendor, tmp_path: Path) -> None:
    # The vectors' collateral passed its nextUpdate long ago: a cache must not keep it.
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    quote = (vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin").read_bytes()
    kwargs = {"pcs_url": vendor.url, "root_crl_url": f"{vendor.url}/IntelSGXRootCA.der"}
    fetch_dcap_collateral(quote, Fetcher(tmp_path), **kwargs)
    again = Fetcher(tmp_path)
    fetch_dcap_collateral(quote, again, **kwargs)
    assert again.requests == 4


def test_missing_issuer_chain_header_is_a_clear_error(vendor: FakeVendor, tmp_path: Path) -> None:
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    for route in vendor.routes.values():
        route.headers.clear()
    quote = (vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin").read_bytes()
    with pytest.raises(CollateralFetchError, match="issuer-chain"):
        fetch_dcap_collateral(quote, Fetcher(tmp_path), pcs_url=vendor.url,
                              root_crl_url=f"{vendor.url}/IntelSGXRootCA.der")


def test_unreachable_service(tmp_path: Path) -> None:
    quote = (vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin").read_bytes()
    with pytest.raises(CollateralFetchError, match="cannot fetch"):
        fetch_dcap_collateral(quote, Fetcher(tmp_path), pcs_url="http://127.0.0.1:9",
                              root_crl_url="http://127.0.0.1:9/crl")


def test_garbage_crl_is_rejected(vendor: FakeVendor, tmp_path: Path) -> None:
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    vendor.routes["/IntelSGXRootCA.der"] = Route(b"<html>maintenance</html>")
    quote = (vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin").read_bytes()
    with pytest.raises(CollateralFetchError, match="not a CRL"):
        fetch_dcap_collateral(quote, Fetcher(tmp_path), pcs_url=vendor.url,
                              root_crl_url=f"{vendor.url}/IntelSGXRootCA.der")


def test_damaged_cache_entries_are_fetched_again(vendor: FakeVendor, tmp_path: Path) -> None:
    from enarx.platform.collateral import fetch_vcek

    _serve_kds(vendor, "ms-milan-v3")
    report = (vector_dir("snp", "ms-milan-v3") / "report.bin").read_bytes()
    fetch_vcek(report, Fetcher(tmp_path), kds_url=vendor.url)
    for meta in tmp_path.glob("*.json"):
        meta.write_text(meta.read_text().replace('"expires": "', '"expires": "garbage'))
    again = Fetcher(tmp_path)
    fetch_vcek(report, again, kds_url=vendor.url)
    assert again.requests == 2
    for body in tmp_path.glob("*.body"):
        body.write_bytes(b"tampered")
    third = Fetcher(tmp_path)
    fetch_vcek(report, third, kds_url=vendor.url)
    assert third.requests == 2


def test_unwritable_out_is_a_clear_error(
    vendor: FakeVendor, enarx: RunEnarx, tmp_path: Path
) -> None:
    _serve_kds(vendor, "ms-milan-v3")
    report = vector_dir("snp", "ms-milan-v3") / "report.bin"
    r = enarx("platform", "snp", "vcek", report, "--kds-url", vendor.url,
              "--cache-dir", tmp_path / "cache", "--out", tmp_path / "missing" / "vcek.pem")
    assert r.returncode == 2, r.stderr
    assert b"Traceback" not in r.stderr
    assert b"--out" in r.stderr and b"cannot write" in r.stderr and b"hint:" in r.stderr
    assert not (tmp_path / "missing").exists()


def test_vcek_fetch_refuses_a_vlek_report_without_asking_kds(tmp_path: Path) -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    fetcher = Fetcher(tmp_path)
    with pytest.raises(CollateralFetchError) as err:
        fetch_vcek(v.report(), fetcher, kds_url="http://127.0.0.1:9")
    assert "VLEK" in err.value.message
    assert fetcher.requests == 0


def test_zoneless_next_update_from_a_pccs_is_read_as_utc(
    vendor: FakeVendor, tmp_path: Path,
) -> None:
    # Some PCCS write times without a zone; Intel's format means UTC (naive would not compare).
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    fmspc = load_manifest("sgx", "dcapqvl-sgx-v3")["evidence"]["fmspc"].upper()
    route = vendor.routes[f"/sgx/certification/v4/tcb?fmspc={fmspc}"]
    zoneless = route.body.replace(b'Z"', b'"')
    assert zoneless != route.body
    route.body = zoneless
    quote = (vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin").read_bytes()
    files = fetch_dcap_collateral(quote, Fetcher(tmp_path / "cache"), pcs_url=vendor.url,
                                  root_crl_url=f"{vendor.url}/IntelSGXRootCA.der")
    assert files["tcb_info.json"] == zoneless


def test_pccs_answering_deeply_nested_json_is_a_clear_error(
    vendor: FakeVendor, enarx: RunEnarx, tmp_path: Path
) -> None:
    _serve_pcs(vendor, "sgx", "dcapqvl-sgx-v3")
    fmspc = load_manifest("sgx", "dcapqvl-sgx-v3")["evidence"]["fmspc"].upper()
    vendor.routes[f"/sgx/certification/v4/tcb?fmspc={fmspc}"].body = (
        b'{"tcbInfo": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    quote = vector_dir("sgx", "dcapqvl-sgx-v3") / "quote.bin"
    out = tmp_path / "collateral"
    r = enarx("platform", "sgx", "cache", quote, "--pcs-url", vendor.url, "--out", out,
              "--root-crl-url", f"{vendor.url}/IntelSGXRootCA.der", "--cache-dir",
              tmp_path / "cache")
    assert r.returncode == 5, r.stderr
    assert b"TCB Info: the response is not a JSON document" in r.stderr
    assert b"hint:" in r.stderr and b"Traceback" not in r.stderr
    assert not out.exists()


def test_fetcher_uses_the_injected_http_client(tmp_path: Path) -> None:
    # The transport decides where requests go: here no socket at all. A malformed QE Identity
    # is refused, and not kept in the cache for the next run.
    import httpx

    folder = vector_dir("sgx", "dcapqvl-sgx-v3")
    chain = urllib.parse.quote((folder / "tcb_info_issuer_chain.pem").read_text())
    served = {
        "tcb": ((folder / "tcb_info.json").read_bytes(), "tcb-info-issuer-chain"),
        "identity": (b"[" * 5000 + b"]" * 5000, "sgx-enclave-identity-issuer-chain"),
        "pckcrl": ((folder / "pck_crl.der").read_bytes(), "sgx-pck-crl-issuer-chain"),
        "root.der": ((folder / "root_ca_crl.der").read_bytes(), "x"),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        for key, (body, header) in served.items():
            if key in request.url.path:
                return httpx.Response(200, content=body, headers={header: chain})
        return httpx.Response(404)

    quote = (folder / "quote.bin").read_bytes()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        fetcher = Fetcher(tmp_path, client=client)
        with pytest.raises(CollateralFetchError, match="QE Identity: the response is not a JSON"):
            fetch_dcap_collateral(quote, fetcher, pcs_url="https://pcs.invalid",
                                  root_crl_url="https://pcs.invalid/root.der")
        assert fetcher.requests == 4 and len(seen) == 4
        again = Fetcher(tmp_path, client=client)
        with pytest.raises(CollateralFetchError):
            fetch_dcap_collateral(quote, again, pcs_url="https://pcs.invalid",
                                  root_crl_url="https://pcs.invalid/root.der")
        assert again.requests == 1  # only the refused QE Identity is asked for again
