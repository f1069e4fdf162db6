"""Fetch verification collateral from the vendors' services, with an on-disk cache.

- AMD KDS: the VCEK for a report's chip and REPORTED_TCB, and the ASK+ARK bundle.
- Intel PCS (or any PCCS speaking its v4 API): TCB Info, QE Identity, PCK CRL (each with its
  issuer chain from the response headers) and the Root CA CRL, saved in the layout that
  ``enarx attest verify --collateral DIR`` reads.

This is an I/O edge: nothing fetched is trusted here. Every result is checked by the pure
verifiers (chains to the shipped roots, signatures) before the caller relies on it.
Cache entries live until the fetched object's own expiry (certificate notAfter, CRL or
collateral nextUpdate) and are written atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enarx.errors import EnarxError
from enarx.fsutil import atomic_write, cache_dir

if TYPE_CHECKING:
    import httpx

__all__ = [
    "INTEL_ROOT_CRL_URL", "KDS_URL", "PCS_URL", "CollateralFetchError", "Fetcher", "Response",
    "SnpCollateral", "default_cache_dir", "fetch_dcap_collateral", "fetch_vcek",
]

KDS_URL = "https://kdsintf.amd.com"
PCS_URL = "https://api.trustedservices.intel.com"
#: Intel's Root CA CRL (also the CRL distribution point in the shipped root certificate).
INTEL_ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
TIMEOUT = 30.0
PROVISIONAL = dt.timedelta(hours=1)
#: Intel reissues collateral at least monthly; never cache anything longer than this.
MAX_PCS_AGE = dt.timedelta(days=30)


class CollateralFetchError(EnarxError):
    """A vendor service could not be reached or answered something unusable."""

    exit_code = 5


def default_cache_dir() -> Path:
    return cache_dir("collateral", env="ENARX_COLLATERAL_CACHE")


@dataclass(frozen=True)
class Response:
    body: bytes
    headers: dict[str, str]
    from_cache: bool = False


class Fetcher:
    """GET with an on-disk cache keyed by URL. Entries live until the expiry recorded with
    ``set_expiry`` (the fetched object's own notAfter / nextUpdate), an hour before that.

    ``client`` is the ``httpx.Client`` requests go through (its transport decides where they
    go: tests and proxies inject one); the caller owns and closes it. Without one, each
    download uses a short-lived client of its own.
    """

    def __init__(self, cache_dir: Path | None = None, *, refresh: bool = False,
                 client: httpx.Client | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.refresh = refresh
        self.client = client
        self.requests = 0  # network requests made (the rest came from the cache)

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.body", self.cache_dir / f"{key}.json"

    def get(self, url: str, *, what: str = "") -> Response:
        """The cached response while it is fresh, else a download (cached for an hour until
        the caller, having parsed it, records its real expiry with ``set_expiry``)."""
        body_path, meta_path = self._paths(url)
        if not self.refresh:
            cached = self._load(body_path, meta_path, url)
            if cached is not None:
                return cached
        response = self._download(url, what)
        until = dt.datetime.now(dt.UTC) + PROVISIONAL
        meta = {"url": url, "headers": response.headers, "expires": until.isoformat(),
                "sha256": hashlib.sha256(response.body).hexdigest()}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(body_path, response.body)
            atomic_write(meta_path, json.dumps(meta).encode())
        except OSError:
            pass  # an unwritable cache costs a download next time, nothing more
        return response

    def set_expiry(self, url: str, expires: dt.datetime) -> None:
        """Record how long a fetched object stays valid once its content has been parsed."""
        meta_path = self._paths(url)[1]
        try:
            meta = json.loads(meta_path.read_text())
            meta["expires"] = expires.isoformat()
            atomic_write(meta_path, json.dumps(meta).encode())
        except (OSError, ValueError, RecursionError):
            pass

    def forget(self, url: str) -> None:
        for path in self._paths(url):
            path.unlink(missing_ok=True)

    def _load(self, body_path: Path, meta_path: Path, url: str) -> Response | None:
        try:
            meta = json.loads(meta_path.read_text())
            body = body_path.read_bytes()
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(meta, dict):
            return None
        if meta.get("url") != url or meta.get("sha256") != hashlib.sha256(body).hexdigest():
            return None  # damaged or colliding entry: fetch again
        try:
            expires = dt.datetime.fromisoformat(meta["expires"])
        except (KeyError, TypeError, ValueError):
            return None
        if expires <= dt.datetime.now(dt.UTC):
            return None
        return Response(body, dict(meta.get("headers", {})), from_cache=True)

    def _download(self, url: str, what: str) -> Response:
        import httpx

        self.requests += 1
        label = what or url
        try:
            if self.client is not None:
                r = self.client.get(url, timeout=TIMEOUT, follow_redirects=True)
            else:
                with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
                    r = client.get(url)
        except httpx.HTTPError as e:
            raise CollateralFetchError(
                f"cannot fetch {label} from {url}: {e}",
                hint=f"check the network, or point {_URL_FLAGS.get(what, '--pcs-url')} at a "
                "reachable service or cache",
            ) from None
        if r.status_code != 200:
            raise CollateralFetchError(
                f"{label}: {url} answered HTTP {r.status_code}",
                hint="404 usually means the service does not know this chip/TCB/FMSPC",
            )
        return Response(r.content, {k.lower(): v for k, v in r.headers.items()})


#: The CLI flag that moves each download elsewhere (default: --pcs-url), for error hints.
_URL_FLAGS = {"VCEK": "--kds-url", "ASK/ARK chain": "--kds-url", "Root CA CRL": "--root-crl-url"}


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


# --- AMD KDS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnpCollateral:
    product: str
    vcek_der: bytes
    chain_pem: bytes  # ASK then ARK, as KDS serves it
    vcek_url: str


def fetch_vcek(
    report: bytes, fetcher: Fetcher, *, kds_url: str = KDS_URL, product: str | None = None
) -> SnpCollateral:
    """The VCEK and ASK+ARK for an SNP report; verified against the report before return."""
    from enarx.attestation.snp import parse_report, verify_report
    from enarx.attestation.snp.certs import load_cert, load_certs
    from enarx.attestation.snp.kds import cert_chain_path, vcek_path

    rep = parse_report(report)
    name = product or rep.product
    if name is None:
        raise CollateralFetchError(
            f"report v{rep.version} does not name its product",
            hint="pass --product Milan|Genoa|Turin",
        )
    if rep.signing_key_name == "VLEK":
        raise CollateralFetchError(
            "this report is signed by a VLEK, which KDS does not serve per chip",
            hint="get the VLEK from your cloud provider (it is often in the extended report)",
        )
    vcek_url = _join(kds_url, vcek_path(rep, name))
    chain_url = _join(kds_url, cert_chain_path(name))
    vcek = fetcher.get(vcek_url, what="VCEK").body
    chain = fetcher.get(chain_url, what="ASK/ARK chain").body
    # Verified before it is trusted or kept: a wrong answer is a loud error, not a cached lie.
    try:
        verify_report(report, cert=vcek, chain=[chain])
    except EnarxError:
        fetcher.forget(vcek_url)
        raise
    # Certificates are immutable: keep them until they expire.
    fetcher.set_expiry(vcek_url, load_cert(vcek, "vcek").not_after)
    fetcher.set_expiry(chain_url, min(c.not_after for c in load_certs(chain, "chain")))
    return SnpCollateral(name, vcek, chain, vcek_url)


# --- Intel PCS / PCCS ----------------------------------------------------------------------

#: (file name in the collateral dir, response header holding its issuer chain)
_HEADERS = {
    "tcb": "tcb-info-issuer-chain",
    "qe": "sgx-enclave-identity-issuer-chain",
    "crl": "sgx-pck-crl-issuer-chain",
}


def fetch_dcap_collateral(
    quote: bytes,
    fetcher: Fetcher,
    *,
    pcs_url: str = PCS_URL,
    root_crl_url: str | None = None,
) -> dict[str, bytes]:
    """Collateral files for a quote, keyed by the names ``--collateral DIR`` reads."""
    import dcap_qvl

    from enarx.attestation.dcap.quote import parse_quote

    parsed = parse_quote(quote)
    try:
        info = dcap_qvl.Quote.parse(parsed.raw)
        fmspc, ca = info.fmspc(), info.ca()
    except Exception as e:  # dcap-qvl raises plain exceptions for quotes it cannot read
        raise CollateralFetchError(f"cannot read FMSPC/PCK CA from the quote: {e}") from None
    tee = "tdx" if parsed.is_tdx else "sgx"
    base = pcs_url.rstrip("/")
    urls = {
        "tcb": f"{base}/{tee}/certification/v4/tcb?fmspc={fmspc}",
        "qe": f"{base}/{tee}/certification/v4/qe/identity",
        "crl": f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
        "root": root_crl_url or INTEL_ROOT_CRL_URL,
    }
    tcb = fetcher.get(urls["tcb"], what="TCB Info")
    qe = fetcher.get(urls["qe"], what="QE Identity")
    crl = fetcher.get(urls["crl"], what="PCK CRL")
    root_crl = fetcher.get(urls["root"], what="Root CA CRL")
    files = {
        "tcb_info.json": tcb.body,
        "tcb_info_issuer_chain.pem": _issuer_chain(tcb, _HEADERS["tcb"], "TCB Info"),
        "qe_identity.json": qe.body,
        "qe_identity_issuer_chain.pem": _issuer_chain(qe, _HEADERS["qe"], "QE Identity"),
        "pck_crl.der": _der_crl(crl.body, "PCK CRL"),
        "pck_crl_issuer_chain.pem": _issuer_chain(crl, _HEADERS["crl"], "PCK CRL"),
        "root_ca_crl.der": _der_crl(root_crl.body, "Root CA CRL"),
    }
    # Each object stays cached until its own nextUpdate (capped: Intel's cadence is monthly).
    now = dt.datetime.now(dt.UTC)
    next_updates = {
        "tcb": _json_next_update(tcb.body, "tcbInfo", "TCB Info", fetcher, urls["tcb"]),
        "qe": _json_next_update(qe.body, "enclaveIdentity", "QE Identity", fetcher, urls["qe"]),
        "crl": _crl_next_update(files["pck_crl.der"]),
        "root": _crl_next_update(files["root_ca_crl.der"]),
    }
    for key, nxt in next_updates.items():
        fetcher.set_expiry(urls[key], min(nxt, now + MAX_PCS_AGE) if nxt else now)
    return files


def _json_next_update(body: bytes, key: str, what: str, fetcher: Fetcher,
                      url: str) -> dt.datetime | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can go
        fetcher.forget(url)  # not worth keeping: the next run asks again
        raise CollateralFetchError(
            f"{what}: the response is not a JSON document",
            hint="check --pcs-url: it must point at Intel PCS or a PCCS (v4 API)",
        ) from None
    try:
        value = doc[key]["nextUpdate"]
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    # A zoneless time (some PCCS) is UTC, as in Intel's format; naive would not compare.
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _crl_next_update(der: bytes) -> dt.datetime | None:
    from cryptography import x509

    return x509.load_der_x509_crl(der).next_update_utc


def _issuer_chain(response: Response, header: str, what: str) -> bytes:
    # PCS sends the issuer chain URL-encoded in a header (v3 named the TCB one SGX-…).
    value = response.headers.get(header) or response.headers.get("sgx-" + header)
    if not value:
        raise CollateralFetchError(f"{what}: the response lacks the {header} header")
    pem = urllib.parse.unquote(value).encode()
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CollateralFetchError(f"{what}: the {header} header holds no PEM certificates")
    return pem


def _der_crl(body: bytes, what: str) -> bytes:
    # Some PCCS versions answer with hex or PEM instead of DER: normalise.
    from cryptography import x509

    candidates = [body]
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(body.decode().strip()))
    for candidate in candidates:
        try:
            return x509.load_der_x509_crl(candidate).public_bytes(_der())
        except (ValueError, x509.InvalidVersion):
            pass
    try:
        return x509.load_pem_x509_crl(body).public_bytes(_der())
    except (ValueError, x509.InvalidVersion):
        raise CollateralFetchError(f"{what}: the response is not a CRL") from None


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER
