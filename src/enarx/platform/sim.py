"""The ``sim`` backend: genuine-format SEV-SNP evidence signed by a local test chain.

For tests and demos only, and loud about it: the host sees everything, and anyone with the
state directory can forge evidence. It makes its own ARK -> ASK -> VCEK chain (RSA-4096 ARK
and ASK with RSA-PSS SHA-384 signatures, an EC P-384 VCEK carrying AMD's TCB, productName
and hwID extensions) and signs SNP v3 reports with it, so the real SNP verifier checks them
byte for byte once the sim ARK is passed as an explicit trust root (``ark_pem()``).

State (keys 0600, directory 0700, every write atomic) lives in ``$ENARX_SIM_DIR`` or the
user's state directory, so a steward can keep trusting the same ARK across runs; RSA-4096
generation is slow, so it happens once. The VCEK key is derived from a chip secret and the
TCB, like AMD's, so changing the TCB yields a different VCEK (issued on demand, cached).

A sim VM Keep (``enarx run --backend sim --vm``) plays the PSP on the host: the launcher
hands the guest this chip's signing material without the CA keys (:meth:`chip_material`) and
the launch it measured; the agent installs both in a fresh state directory
(:func:`install_chip`: ``launch.json`` holds MEASUREMENT and HOST_DATA), and the sim inside
the VM signs reports carrying them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from enarx.attestation.snp.abi import (
    ECDSA_COMPONENT_SIZE,
    REPORT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    TcbVersion,
    build_report,
)
from enarx.attestation.snp.certs import OID_HWID, OID_PRODUCT_NAME, OID_STRUCT_VERSION, SPL_OIDS
from enarx.errors import EvidenceError
from enarx.fsutil import atomic_write, ensure_private_dir, state_dir
from enarx.platform.base import Backend, Check, Evidence

__all__ = [
    "DEFAULT_MEASUREMENT", "DEFAULT_POLICY", "DEFAULT_TCB", "LAUNCH_FILE", "SimBackend",
    "default_state_dir", "install_chip",
]

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x01)}
_PRODUCT_NAME = {"Milan": "Milan-B0", "Genoa": "Genoa", "Turin": "Turin"}
_ORG = "enarx simulator (NOT AMD, NOT CONFIDENTIAL)"
DEFAULT_TCB: dict[str, int] = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219, "fmc": 1}
DEFAULT_POLICY = 0x30000  # SMT allowed, reserved bit 17 set, not debuggable
DEFAULT_MEASUREMENT = hashlib.sha384(b"enarx sim launch measurement").digest()
#: In the state directory: the launch a sim VM Keep's host measured (MEASUREMENT, HOST_DATA).
LAUNCH_FILE = "launch.json"


def default_state_dir() -> Path:
    """``$ENARX_SIM_DIR``, else ``$XDG_STATE_HOME/enarx/sim`` (``~/.local/state/...``)."""
    return state_dir("sim", env="ENARX_SIM_DIR")


class SimBackend(Backend):
    name = "sim"
    confidential = False
    warning = "sim backend: evidence is signed by a locally made test chain; NOT confidential"

    def __init__(
        self,
        state_dir: Path | None = None,
        root: Path | None = None,
        *,
        product: str = "Milan",
        measurement: bytes | None = None,
        tcb: dict[str, int] | None = None,
        policy: int = DEFAULT_POLICY,
        vmpl: int = 0,
        guest_svn: int = 0,
        host_data: bytes | None = None,
    ) -> None:
        super().__init__(root)
        if product not in _CPUID:
            raise EvidenceError(f"sim: unknown product {product!r}",
                                hint=f"use one of {', '.join(_CPUID)}")
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.product = product
        #: None: the state directory's launch.json (a sim VM Keep), else the defaults
        self._explicit = (measurement, host_data)
        self.measurement = measurement if measurement is not None else DEFAULT_MEASUREMENT
        self.tcb = dict(tcb if tcb is not None else DEFAULT_TCB)
        self.policy = policy
        self.vmpl = vmpl
        self.guest_svn = guest_svn
        self.host_data = host_data if host_data is not None else bytes(32)
        #: KEY_INFO word; 0 = signed by the VCEK (tests may set 4 = "VLEK" to probe checks)
        self.key_info = 0
        self._ca_keys: dict[str, rsa.RSAPrivateKey] = {}
        self._secret: bytes | None = None

    # --- Backend interface ----------------------------------------------------------------

    def probe(self) -> list[Check]:
        return [
            Check(
                "simulated SEV-SNP evidence", True,
                detail=f"test chain in {self.state_dir}; NOT confidential",
                hint="use sev-snp, tdx or sgx for real confidentiality",
            )
        ]

    def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise EvidenceError(
                f"report_data must be 64 bytes, got {len(report_data)}",
                hint="hash longer data (e.g. SHA-512) into 64 bytes",
            )
        report = self.report(report_data)
        return Evidence(
            kind="snp-report",
            blob=report,
            certs=(self.vcek_der(), self._ask_cert().public_bytes(serialization.Encoding.DER),
                   self._ark_cert().public_bytes(serialization.Encoding.DER)),
            provider="sim",
        )

    # --- sim specifics --------------------------------------------------------------------

    def ark_pem(self) -> bytes:
        """The sim root, to pass as an explicit ``trust_roots`` entry."""
        self._ensure()
        return (self.state_dir / "ark.pem").read_bytes()

    def chip_id(self) -> bytes:
        self._ensure()
        assert self._secret is not None
        return hashlib.sha512(b"enarx-sim-chip-id" + self._secret).digest()

    def tcb_raw(self) -> int:
        return TcbVersion.encode(self.tcb, turin=self.product == "Turin")

    def report(self, report_data: bytes) -> bytes:
        """A signed SNP v3 report binding ``report_data``."""
        self._ensure()
        assert self._secret is not None
        family, model, stepping = _CPUID[self.product]
        tcb = self.tcb_raw()
        body = build_report({
            "version": 3,
            "guest_svn": self.guest_svn,
            "policy": self.policy,
            "vmpl": self.vmpl,
            "signature_algo": SIG_ALGO_ECDSA_P384_SHA384,
            "current_tcb": tcb, "reported_tcb": tcb, "committed_tcb": tcb, "launch_tcb": tcb,
            "platform_info": 0x1,  # SMT enabled
            "key_info": self.key_info,
            "report_data": report_data,
            "measurement": self.measurement,
            "host_data": self.host_data,
            "report_id": hashlib.sha256(b"enarx-sim-report-id" + self._secret).digest(),
            "cpuid_family": family, "cpuid_model": model, "cpuid_stepping": stepping,
            "chip_id": self.chip_id(),
            "current_major": 1, "current_minor": 55, "current_build": 0,
            "committed_major": 1, "committed_minor": 55, "committed_build": 0,
        })
        der = self._vcek_key().sign(body, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        sig = (r.to_bytes(ECDSA_COMPONENT_SIZE, "little") + s.to_bytes(ECDSA_COMPONENT_SIZE, "little"))
        out = body + sig
        return out + bytes(REPORT_SIZE - len(out))

    def _vcek_path(self) -> Path:
        return self.state_dir / f"vcek-{self.product.lower()}-{self.tcb_raw():016x}.der"

    def vcek_der(self) -> bytes:
        """The VCEK for the current product and TCB (issued once, then cached on disk)."""
        self._ensure()
        path = self._vcek_path()
        if path.exists():
            return path.read_bytes()
        der = self.issue_vcek()
        atomic_write(path, der, mode=0o644)
        return der

    def issue_vcek(self, *, tcb: dict[str, int] | None = None, hw_id: bytes | None = None) -> bytes:
        """DER VCEK for the current key; ``tcb``/``hw_id`` override what the certificate
        *claims*, to mimic a mis-issued certificate when testing a verifier's TCB checks."""
        self._ensure()
        return self._issue_vcek(tcb, hw_id).public_bytes(serialization.Encoding.DER)

    def crl(self, revoked: Sequence[int] = (), *, issuer: str = "ark",
            next_update: dt.datetime | None = None) -> bytes:
        """A DER CRL signed by the sim ARK (or ASK) listing ``revoked`` serial numbers."""
        self._ensure()
        key, cert = (
            (self._ca_key("ark"), self._ark_cert()) if issuer == "ark"
            else (self._ca_key("ask"), self._ask_cert())
        )
        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateRevocationListBuilder()
             .issuer_name(cert.subject)
             .last_update(now - dt.timedelta(days=1))
             .next_update(next_update or now + dt.timedelta(days=30)))
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(now - dt.timedelta(hours=1)).build()
            )
        return b.sign(key, hashes.SHA384(), rsa_padding=_PSS).public_bytes(
            serialization.Encoding.DER)

    def ask_serial(self) -> int:
        return self._ask_cert().serial_number

    # --- state ----------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self._secret is not None:
            return
        d = self.state_dir
        try:
            ensure_private_dir(d)
            with _locked(d / ".lock"):
                if not (d / "ask.pem").exists():
                    self._generate()
            secret = (d / "chip.secret").read_bytes()
            launch = _read_launch(d / LAUNCH_FILE)
        except OSError as exc:
            raise EvidenceError(f"sim state in {d} is not usable: {exc}",
                                hint="set ENARX_SIM_DIR to a writable directory") from None
        if launch is not None:
            measurement, host_data = self._explicit
            self.measurement = launch[0] if measurement is None else measurement
            self.host_data = launch[1] if host_data is None else host_data
        self._secret = secret

    def _ca_key(self, which: str) -> rsa.RSAPrivateKey:
        """The ARK or ASK private key: only to issue VCEKs and CRLs (a sim VM Keep's guest
        has none; it signs with the VCEK the host issued)."""
        self._ensure()
        if which in self._ca_keys:
            return self._ca_keys[which]
        path = self.state_dir / f"{which}.key"
        try:
            key = self._ca_keys[which] = _load_key(path)
            return key
        except OSError as exc:
            raise EvidenceError(f"sim: {path} is not readable: {exc.strerror}",
                                hint="this sim state holds no CA keys (a VM Keep's copy); "
                                "issue VCEKs and CRLs on the host") from None

    def chip_material(self) -> dict[str, str]:
        """This chip's signing material for a sim VM Keep's guest: the chip secret, the
        current VCEK and the ARK/ASK certificates; never the CA keys."""
        self._ensure()
        assert self._secret is not None
        return {"product": self.product, "chip_secret": base64.b64encode(self._secret).decode(),
                "vcek": base64.b64encode(self.vcek_der()).decode(),
                "ark": self.ark_pem().decode(),
                "ask": (self.state_dir / "ask.pem").read_text()}

    def _generate(self) -> None:
        d = self.state_dir
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ark_name = _name("SIM-ARK")
        ark = _ca_cert(ark_name, ark_name, ark_key.public_key(), ark_key, now, 25)
        ask = _ca_cert(_name("SIM-ASK"), ark_name, ask_key.public_key(), ark_key, now, 25)
        # Keys and secret first, the certificates last: ask.pem marks a complete state.
        for fname, key in (("ark.key", ark_key), ("ask.key", ask_key)):
            atomic_write(d / fname, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), mode=0o600)
        atomic_write(d / "chip.secret", os.urandom(32), mode=0o600)
        atomic_write(d / "ark.pem", ark.public_bytes(serialization.Encoding.PEM), mode=0o644)
        atomic_write(d / "ask.pem", ask.public_bytes(serialization.Encoding.PEM), mode=0o644)

    def _ark_cert(self) -> x509.Certificate:
        self._ensure()
        return x509.load_pem_x509_certificate((self.state_dir / "ark.pem").read_bytes())

    def _ask_cert(self) -> x509.Certificate:
        self._ensure()
        return x509.load_pem_x509_certificate((self.state_dir / "ask.pem").read_bytes())

    def _vcek_key(self) -> ec.EllipticCurvePrivateKey:
        # Like AMD's VCEK: a function of the chip secret and the TCB it is issued for.
        assert self._secret is not None
        seed = hashlib.sha384(
            b"enarx-sim-vcek" + self._secret + self.tcb_raw().to_bytes(8, "little")
            + self.product.encode()
        ).digest()
        order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
        return ec.derive_private_key(int.from_bytes(seed, "big") % (order - 1) + 1, ec.SECP384R1())

    def _issue_vcek(self, tcb: dict[str, int] | None, hw_id: bytes | None) -> x509.Certificate:
        ask_key = self._ca_key("ask")
        claimed = tcb if tcb is not None else self.tcb
        turin = self.product == "Turin"
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        b = (x509.CertificateBuilder()
             .subject_name(_name("SEV-VCEK"))
             .issuer_name(self._ask_cert().subject)
             .public_key(self._vcek_key().public_key())
             .serial_number(1)  # AMD uses 0, which cryptography's builder refuses
             .not_valid_before(now)
             .not_valid_after(now + dt.timedelta(days=7 * 365)))
        exts: list[tuple[str, bytes]] = [
            (OID_STRUCT_VERSION, _der_int(1 if turin else 0)),
            (OID_PRODUCT_NAME, _der_ia5(_PRODUCT_NAME[self.product])),
        ]
        for name, oid in SPL_OIDS.items():
            if name != "fmc" or turin:
                exts.append((oid, _der_int(claimed.get(name, 0))))
        chip = self.chip_id()
        exts.append((OID_HWID, hw_id if hw_id is not None else chip[:8] if turin else chip))
        for oid, value in exts:
            b = b.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
            )
        return b.sign(ask_key, hashes.SHA384(), rsa_padding=_PSS)


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _ca_cert(subject: x509.Name, issuer: x509.Name, pub: rsa.RSAPublicKey,
             signer: rsa.RSAPrivateKey, now: dt.datetime, years: int) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(signer, hashes.SHA384(), rsa_padding=_PSS))


def _der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(s: str) -> bytes:
    raw = s.encode("ascii")
    return bytes([0x16, len(raw)]) + raw


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    # Skipping OpenSSL's RSA consistency check (a ~0.3 s prime test per RSA-4096 key on every
    # evidence request) is safe here: the key only signs *simulated* evidence, is made by
    # this module in a 0700 state dir, and a damaged key yields signatures that fail to verify.
    key = serialization.load_pem_private_key(
        path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise EvidenceError(f"sim key {path} is not an RSA key",
                            hint="delete the sim state directory to regenerate it")
    return key


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two processes starting at once must not each write half a chain.
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_launch(path: Path) -> tuple[bytes, bytes] | None:
    try:
        doc = json.loads(path.read_text())
        out = bytes.fromhex(doc["measurement"]), bytes.fromhex(doc["host_data"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise EvidenceError(f"sim: {path} is not a launch record",
                            hint="delete it; the VM agent writes it") from None
    if len(out[0]) != 48 or len(out[1]) != 32:
        raise EvidenceError(f"sim: {path}: MEASUREMENT must be 48 bytes and HOST_DATA 32",
                            hint="delete it; the VM agent writes it")
    return out


def install_chip(state_dir: Path, material: dict[str, str], *, measurement: bytes,
                 host_data: bytes) -> None:
    """Inside a sim VM Keep: make ``state_dir`` a sim state signing as the host's chip (from
    :meth:`SimBackend.chip_material`) with the launch the host measured."""
    if len(measurement) != 48 or len(host_data) != 32:
        raise EvidenceError("sim launch: MEASUREMENT must be 48 bytes and HOST_DATA 32")
    try:
        secret = base64.b64decode(material["chip_secret"], validate=True)
        vcek = base64.b64decode(material["vcek"], validate=True)
        ark, ask, product = material["ark"], material["ask"], material["product"]
    except (KeyError, TypeError, ValueError):
        raise EvidenceError("sim launch: the chip material is incomplete") from None
    ensure_private_dir(state_dir)
    atomic_write(state_dir / "chip.secret", secret, mode=0o600)
    atomic_write(state_dir / "ark.pem", ark.encode(), mode=0o644)
    atomic_write(state_dir / "ask.pem", ask.encode(), mode=0o644)
    # the guest's sim has the host's product and TCB, so it looks for the same VCEK name
    atomic_write(SimBackend(state_dir, product=product)._vcek_path(), vcek, mode=0o644)
    atomic_write(state_dir / LAUNCH_FILE, json.dumps(
        {"measurement": measurement.hex(), "host_data": host_data.hex()}).encode(), mode=0o644)
