"""AMD certificates: the serial-0 quirk, the shipped roots, and the AMD extensions."""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation import roots
from enarx.attestation.snp.certs import load_cert, load_certs
from enarx.errors import MalformedEvidence
from tests.attestation.snp_support import load_snp
from tests.vectors import vectors_dir

REPO = Path(__file__).resolve().parents[2]


def test_cryptography_still_loads_serial_zero_vceks_but_warns() -> None:
    """Pins the behaviour enarx relies on. AMD issues every VCEK/VLEK with serial 0; the
    installed cryptography loads them with a deprecation warning. If this test fails because
    cryptography raises instead, SNP verification is broken: keep the pyproject upper pin."""
    v = load_snp("gosevguest-milan-v2")
    with pytest.warns(CryptographyDeprecationWarning, match="serial number"):
        cert = x509.load_der_x509_certificate(v.leaf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        assert cert.serial_number == 0


@pytest.mark.parametrize("name", ["gosevguest-milan-v2", "trustee-aws-milan-vlek-v3",
                                  "ms-turin-v5"])
def test_our_loader_reads_serial_zero_without_any_warning(name: str) -> None:
    v = load_snp(name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cert = load_cert(v.leaf, "vcek")
        assert cert.serial == 0
    assert seen == []
    assert cert.kind == ("vlek" if "vlek" in name else "vcek")


def test_amd_extensions_are_decoded() -> None:
    vcek = load_cert(load_snp("gosevguest-milan-v2").leaf, "vcek")
    assert vcek.product_name() == "Milan-B0"
    assert vcek.hw_id() is not None and len(vcek.hw_id() or b"") == 64
    assert set(vcek.spls()) == {"bootloader", "tee", "snp", "microcode"}
    vlek = load_cert(load_snp("trustee-aws-milan-vlek-v3").leaf, "vlek")
    assert vlek.hw_id() is None and (vlek.csp_id() or "").startswith("CN=")


@pytest.mark.parametrize("bad", [b"", b"not a cert", b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                 b"-----END CERTIFICATE-----\n", b"\x30\x03\x02\x01\x00"])
def test_garbage_certificates_are_malformed(bad: bytes) -> None:
    with pytest.raises(MalformedEvidence) as err:
        load_certs(bad, "vcek")
    assert err.value.check == "snp.cert.vcek"


@pytest.mark.parametrize("product", roots.AMD_PRODUCTS)
def test_shipped_amd_roots_are_the_published_ones_and_link(product: str) -> None:
    published = vectors_dir() / "roots" / "amd" / product.lower()  # tests/data/vectors
    for role, getter in (("ark", roots.amd_ark), ("ask", roots.amd_ask),
                         ("asvk", roots.amd_asvk)):
        shipped = getter(product)
        assert hashlib.sha256(shipped).digest() == hashlib.sha256(
            (published / f"{role}.pem").read_bytes()).digest()
    ark = load_cert(roots.amd_ark(product), "ark")
    assert ark.self_issued and ark.signed_by(ark)
    for inter in (roots.amd_ask(product), roots.amd_asvk(product)):
        assert load_cert(inter, "ask").signed_by(ark)


def test_intel_root_is_shipped() -> None:
    root = x509.load_pem_x509_certificate(roots.intel_sgx_root())
    assert root.subject == root.issuer
    assert "SGX Root CA" in root.subject.rfc4514_string()


def test_package_data_globs_cover_every_shipped_root() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["enarx.attestation.roots"]
    base = REPO / "src" / "enarx" / "attestation" / "roots"
    pems = [p.relative_to(base).as_posix() for p in base.rglob("*.pem")]
    assert len(pems) == 10
    # setuptools globs do not cross "/" with "*", so match segment by segment.
    for pem in pems:
        assert any(g.count("/") == pem.count("/") and fnmatch.fnmatch(pem, g) for g in globs), pem


def test_is_vendor_root_says_no_to_an_invalid_certificate_version() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(x509.load_pem_x509_certificate(roots.intel_sgx_root()).public_bytes(
        Encoding.DER))
    der[der.find(b"\xa0\x03\x02\x01\x02") + 4] = 7  # version v3 -> 8: InvalidVersion
    assert roots.is_vendor_root(roots.intel_sgx_root())
    assert not roots.is_vendor_root(bytes(der))
