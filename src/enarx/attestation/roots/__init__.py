"""Vendor trust anchors shipped inside the package.

``amd/<product>/{ark,ask,asvk}.pem`` are AMD's public SEV-SNP root (ARK) and intermediate
(ASK signs VCEKs, ASVK signs VLEKs) certificates for Milan, Genoa and Turin, byte-identical to
what AMD's key distribution service serves. ``intel/`` holds the Intel SGX provisioning root
(used by the DCAP verifier for SGX and TDX). Reading package data is the only "I/O" here;
results are cached, so callers may call these freely.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["AMD_PRODUCTS", "amd_ark", "amd_ask", "amd_asvk", "intel_sgx_root", "is_vendor_root"]

AMD_PRODUCTS: tuple[str, ...] = ("Milan", "Genoa", "Turin")


def _read(*parts: str) -> bytes:
    node = resources.files(__name__)
    for part in parts:
        node = node.joinpath(part)
    return node.read_bytes()


@cache
def amd_ark(product: str) -> bytes:
    """PEM of AMD's root key (ARK) for ``product`` ("Milan", "Genoa", "Turin")."""
    return _read("amd", _dir(product), "ark.pem")


@cache
def amd_ask(product: str) -> bytes:
    """PEM of the AMD SEV key (ASK) that signs VCEKs of ``product``."""
    return _read("amd", _dir(product), "ask.pem")


@cache
def amd_asvk(product: str) -> bytes:
    """PEM of the AMD SEV VLEK key (ASVK) that signs VLEKs of ``product``."""
    return _read("amd", _dir(product), "asvk.pem")


@cache
def intel_sgx_root() -> bytes:
    """PEM of the Intel SGX Provisioning Certification Root CA."""
    return _read("intel", "Intel_SGX_Provisioning_Certification_RootCA.pem")


def _dir(product: str) -> str:
    if product not in AMD_PRODUCTS:
        raise KeyError(f"no shipped AMD roots for product {product!r}")
    return product.lower()


def is_vendor_root(pem_or_der: bytes) -> bool:
    """Whether a certificate is one of the shipped vendor roots (byte-equal DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def der(data: bytes) -> bytes:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)

    try:
        candidate = der(pem_or_der)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        return False
    shipped = [amd_ark(p) for p in AMD_PRODUCTS] + [intel_sgx_root()]
    return any(der(s) == candidate for s in shipped)
