"""TDX and SGX through the key broker with real DCAP quotes (tests/data/vectors): the steward
verifies each quote with its collateral (sent along, or from the steward's --collateral
cache) as of the collateral's validity time, then refuses it because its REPORT_DATA cannot
be this session's binding. Real quotes with the wrong tee, tampered bytes, no collateral, or
verified today (expired collateral) are refused for those reasons instead."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enarx.attestation.dcap.collateral import FILES
from enarx.steward import dcap_kbs
from enarx.steward.app import create_app
from enarx.steward.ca import StewardCA
from enarx.steward.ear import EarSigner
from enarx.steward.policy import StewardPolicy
from enarx.steward.service import Steward
from enarx.steward.store import open_store
from tests.steward.kbsflow import AsgiClient, new_key, public_jwk

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
TDX = VECTORS / "tdx" / "dcapqvl-tdx-v4"
SGX = VECTORS / "sgx" / "dcapqvl-sgx-v3"


def _manifest(d: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((d / "manifest.json").read_text())
    return out


def _at(d: Path) -> dt.datetime:
    return dt.datetime.fromisoformat(_manifest(d)["verify_at"].replace("Z", "+00:00"))


def _collateral(d: Path) -> dict[str, str]:
    return {name: base64.b64encode((d / name).read_bytes()).decode()
            for name in FILES.values() if (d / name).exists()}


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    opened: list[tuple[AsgiClient, Any]] = []

    def build(at: dt.datetime | None, collateral_dir: Path | None = None) -> AsgiClient:
        store = open_store(None, tmp_path / f"s{len(opened)}")
        steward = Steward(StewardPolicy.loads(""), StewardCA.create("t"), EarSigner.generate(),
                          store, (), evidence_clock=(lambda: at) if at else None,
                          collateral_dir=collateral_dir)
        client = AsgiClient(create_app(steward, admin_token="x"))
        opened.append((client, store))
        return client

    yield build
    for client, store in opened:
        client.close()
        store.close()


def _attest(client: AsgiClient, tee: str, primary: Any) -> Any:
    r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": tee, "extra-params": {}})
    assert r.status_code == 200, r.text
    body = {"runtime-data": {"nonce": r.json()["nonce"], "tee-pubkey": public_jwk(new_key())},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}}
    return client.post("/kbs/v0/attest", json=body)


def _failed(r: Any) -> dict[str, Any]:
    assert r.status_code == 401, r.text
    assert "Traceback" not in r.text
    first: dict[str, Any] = r.json()["failed"][0]
    return first


@pytest.mark.parametrize(("tee", "d"), [("tdx", TDX), ("sgx", SGX)], ids=["tdx", "sgx"])
def test_real_quote_is_verified_then_refused_for_binding(make: Any, tee: str, d: Path) -> None:
    client = make(_at(d))
    quote = base64.b64encode((d / "quote.bin").read_bytes()).decode()
    failed = _failed(_attest(client, tee, {"quote": quote, "collateral": _collateral(d)}))
    assert failed["rule"] == "report_data"
    assert failed["actual"] == _manifest(d)["evidence"]["report_data_hex"]


def test_trustee_tdx_form_uses_the_stewards_collateral_cache(make: Any,
                                                             tmp_path: Path) -> None:
    quote = base64.b64encode((TDX / "quote.bin").read_bytes()).decode()
    trustee_form = {"quote": quote, "cc_eventlog": None}
    # no collateral anywhere: refused, naming what is missing
    assert _failed(_attest(make(_at(TDX)), "tdx", trustee_form))["rule"] == "dcap.collateral"
    # a cache directory with an FMSPC sub-directory
    cache = tmp_path / "cache" / _manifest(TDX)["evidence"]["fmspc"]
    cache.mkdir(parents=True)
    for name in FILES.values():
        if (TDX / name).exists():
            (cache / name).write_bytes((TDX / name).read_bytes())
    client = make(_at(TDX), collateral_dir=cache.parent)
    failed = _failed(_attest(client, "tdx", trustee_form))
    assert failed["rule"] == "report_data"
    # the same with the files directly in the directory
    client = make(_at(TDX), collateral_dir=cache)
    assert _failed(_attest(client, "tdx", trustee_form))["rule"] == "report_data"


def test_wrong_tee_tampered_quote_and_expired_collateral_are_refused(make: Any) -> None:
    raw = (TDX / "quote.bin").read_bytes()
    good = {"quote": base64.b64encode(raw).decode(), "collateral": _collateral(TDX)}
    client = make(_at(TDX))
    assert _failed(_attest(client, "sgx", good))["rule"] == "dcap.tee"
    tampered = bytearray(raw)
    tampered[0x300] ^= 1  # inside the signed TD report body
    bad = dict(good, quote=base64.b64encode(bytes(tampered)).decode())
    assert _failed(_attest(client, "tdx", bad))["rule"] not in ("report_data", "dcap.tee")
    # verified as of today, the 30-day collateral has long expired
    assert _failed(_attest(make(None), "tdx", good))["rule"] != "report_data"


@pytest.mark.parametrize("primary", [None, "x", {"quote": 1}, {"quote": "!!"}, {"quote": ""},
                                     {"quote": "AAAA", "collateral": []},
                                     {"quote": "AAAA", "collateral": {"tcb_info.json": 5}}])
def test_malformed_dcap_evidence_is_a_typed_400(make: Any, primary: Any) -> None:
    r = _attest(make(None), "tdx", primary)
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("InvalidEvidence")


def test_garbage_quote_is_refused_not_500(make: Any) -> None:
    r = _attest(make(None), "tdx", {"quote": "AAAA", "collateral": _collateral(TDX)})
    assert 400 <= r.status_code < 500, r.text


def test_read_collateral_dir_prefers_the_fmspc_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "tcb_info.json").write_bytes(b"top")
    sub = tmp_path / _manifest(TDX)["evidence"]["fmspc"]
    sub.mkdir()
    (sub / "tcb_info.json").write_bytes(b"sub")
    quote = (TDX / "quote.bin").read_bytes()
    assert dcap_kbs.read_collateral_dir(tmp_path, quote) == {"tcb_info.json": b"sub"}
    assert dcap_kbs.read_collateral_dir(tmp_path) == {"tcb_info.json": b"top"}


def test_serve_collateral_and_qe_identity_options(tmp_path: Path, enarx: Any) -> None:
    """A real ``enarx steward serve --collateral DIR``: a Trustee-form TDX quote is checked with
    the cached collateral (today it has expired, so the refusal names that, not a missing
    cache); a bad --sgx-qe-identity is refused at start-up with exit 2."""
    import ssl

    import httpx

    from tests.steward.test_server import Steward as Server

    policy = tmp_path / "steward.toml"
    policy.write_text("")
    r = enarx("steward", "serve", "--policy", policy, "--state-dir", tmp_path / "s0",
              "--port", "0", "--sgx-qe-identity", tmp_path / "nope.json")
    assert r.returncode == 2 and b"hint:" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "s0").exists()
    (tmp_path / "qe").mkdir()
    (tmp_path / "qe" / "qe_identity.json").write_bytes((SGX / "qe_identity.json").read_bytes())
    (tmp_path / "qe" / "qe_identity_issuer_chain.pem").write_bytes(
        (SGX / "qe_identity_issuer_chain.pem").read_bytes())
    server = Server(["--policy", str(policy), "--state-dir", str(tmp_path / "s1"),
                     "--collateral", str(TDX), "--sgx-qe-identity",
                     str(tmp_path / "qe" / "qe_identity.json")])
    try:
        ctx = ssl.create_default_context(cadata=(tmp_path / "s1" / "ca.crt").read_text())
        with httpx.Client(base_url=server.url, verify=ctx, timeout=30) as c:
            r = c.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "tdx"})
            quote = base64.b64encode((TDX / "quote.bin").read_bytes()).decode()
            body = {"runtime-data": {"nonce": r.json()["nonce"],
                                     "tee-pubkey": public_jwk(new_key())},
                    "tee-evidence": {"primary_evidence": {"quote": quote}}}
            failed = _failed(c.post("/kbs/v0/attest", json=body))
            assert failed["rule"] not in ("dcap.collateral", "report_data"), failed
    finally:
        server.stop()
