"""Evidence backends against simulated device trees.

Honest scope: no TEE is present here, so these tests exercise *our side* of each protocol —
the configfs-tsm file dance (mkdir, inblob, generation, outblob/auxblob, rmdir), the
sev-guest ioctl struct packing and error/retry handling, Gramine's pseudo-files, and the
probes — against fakes that behave as the kernel documents. The fakes hand back real
reports/quotes from the vectors (which bind *other* report_data), and the results are then
verified with the real verifiers, so the plumbing end to end is checked, not the hardware.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import errno
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from enarx.errors import EvidenceError
from enarx.platform import sev_guest, tsm
from enarx.platform.kvm import KvmBackend
from enarx.platform.sgx import SgxBackend
from enarx.platform.snp import SnpBackend
from enarx.platform.tdx import TdxBackend
from tests.attestation.dcap_support import load_dcap
from tests.vectors import load_manifest

RD = bytes(range(64))


def _der(path: Path) -> list[bytes]:
    # Plain base64: the VCEK's zero serial makes cryptography warn on parsing.
    data = path.read_bytes()
    if b"-----BEGIN" not in data:
        return [data]
    blocks = data.split(b"-----BEGIN CERTIFICATE-----")[1:]
    return [base64.b64decode(b"".join(b.split(b"-----END")[0].split())) for b in blocks]


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """Build a GHCB certificate table the way the host/firmware lays it out."""
    guid = {v: k for k, v in sev_guest.CERT_GUIDS.items()}
    head = 24 * (len(entries) + 1)
    table, blobs, offset = b"", b"", head
    for name, data in entries:
        table += guid[name].bytes + struct.pack("<II", offset, len(data))
        blobs += data
        offset += len(data)
    return table + bytes(24) + blobs


@pytest.fixture(scope="module")
def milan() -> dict[str, Any]:
    m = load_manifest("snp", "ms-milan-v3")
    d: Path = m["_dir"]
    return {
        "report": (d / "report.bin").read_bytes(),
        "vcek": _der(d / "vcek.pem")[0], "ask": _der(d / "ask.pem")[0],
        "ark": _der(d / "ark.pem")[0],
        "at": dt.datetime.fromisoformat(m["verify_at"].replace("Z", "+00:00")),
    }


# --- configfs-tsm --------------------------------------------------------------------------


class FakeConfigfs(tsm.FileOps):
    """Plays the kernel: mkdir populates attributes, writes bump ``generation``, outblob is
    produced for the last inblob, rmdir removes the entry whole."""

    def __init__(self, provider: str, outblob: bytes, auxblob: bytes | None = None,
                 races: int = 0) -> None:
        self.provider, self.outblob, self.auxblob, self.races = provider, outblob, auxblob, races
        self.inblobs: list[bytes] = []
        self.privlevels: list[bytes] = []
        self.removed: list[Path] = []

    def mkdir(self, path: Path) -> None:
        path.mkdir()  # FileExistsError like configfs
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")
        if self.auxblob is not None:
            (path / "auxblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        self.removed.append(path)
        shutil.rmtree(path)

    def _bump(self, entry: Path) -> None:
        g = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{g + 1}\n")

    def write(self, path: Path, data: bytes) -> None:
        if path.name == "inblob":
            if len(data) > 64:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.inblobs.append(data)
        elif path.name == "privlevel":
            self.privlevels.append(data)
        else:
            raise OSError(errno.EACCES, "read-only attribute")
        path.write_bytes(data)
        self._bump(path.parent)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            if self.races:  # another process writes the same entry meanwhile
                self.races -= 1
                self._bump(path.parent)
            return self.outblob
        if path.name == "auxblob":
            return self.auxblob or b""
        return path.read_bytes()


def _tree(tmp_path: Path, flags: str = "", nodes: tuple[str, ...] = (),
          tsm_dir: bool = False) -> Path:
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/cpuinfo").write_text(
        f"processor\t: 0\nflags\t\t: fpu vme {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    for n in nodes:
        p = tmp_path / n.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    if tsm_dir:
        (tmp_path / tsm.TSM_REPORT_DIR.lstrip("/")).mkdir(parents=True)
    return tmp_path


def test_snp_via_configfs_tsm_gives_verifiable_evidence(tmp_path: Path,
                                                        milan: dict[str, Any]) -> None:
    from enarx.attestation.snp import verify_report

    root = _tree(tmp_path, "sev sev_es sev_snp", tsm_dir=True)
    aux = cert_table([("vcek", milan["vcek"]), ("ask", milan["ask"]), ("ark", milan["ark"])])
    fake = FakeConfigfs("sev_guest", milan["report"], aux)
    b = SnpBackend(root)
    b.tsm_ops, b.vmpl = fake, 1
    assert b.available()
    ev = b.evidence(RD)
    assert (ev.kind, ev.blob, ev.provider) == ("snp-report", milan["report"],
                                              "configfs-tsm/sev_guest")
    assert ev.certs == (milan["vcek"], milan["ask"], milan["ark"])
    assert fake.inblobs == [RD] and fake.privlevels == [b"1"]
    assert fake.removed and not fake.removed[0].exists()  # entry cleaned up
    checked = verify_report(ev.blob, cert=ev.certs[0], chain=ev.certs[1:], at=milan["at"])
    assert checked.platform.value == "snp"


def test_tdx_via_configfs_tsm_gives_verifiable_quote(tmp_path: Path) -> None:
    v = load_dcap("tdx", "dcapqvl-tdx-v4")
    root = _tree(tmp_path, "tdx_guest", nodes=("/dev/tdx_guest",), tsm_dir=True)
    b = TdxBackend(root)
    b.tsm_ops = FakeConfigfs("tdx_guest", v.quote)
    assert b.available()
    ev = b.evidence(RD)
    assert ev.kind == "tdx-quote" and ev.certs == ()
    assert v.verify(ev.blob).tcb.status.value == "UpToDate"


def test_tsm_retries_when_another_writer_races(tmp_path: Path) -> None:
    root = _tree(tmp_path, tsm_dir=True)
    fake = FakeConfigfs("tdx_guest", b"quote", races=1)
    got = tsm.get_report(root / tsm.TSM_REPORT_DIR.lstrip("/"), RD, ops=fake)
    assert got.outblob == b"quote" and fake.inblobs == [RD, RD]


def test_tsm_gives_up_when_the_race_persists(tmp_path: Path) -> None:
    root = _tree(tmp_path, tsm_dir=True)
    fake = FakeConfigfs("tdx_guest", b"quote", races=10)
    with pytest.raises(EvidenceError, match="raced"):
        tsm.get_report(root / tsm.TSM_REPORT_DIR.lstrip("/"), RD, ops=fake, retries=3)
    assert len(fake.removed) == 1 and not fake.removed[0].exists()


def test_tsm_wrong_provider_and_missing_dir(tmp_path: Path) -> None:
    root = _tree(tmp_path, "tdx_guest", tsm_dir=True)
    b = SnpBackend(root)
    b.tsm_ops = FakeConfigfs("tdx_guest", b"x")
    with pytest.raises(EvidenceError, match="provider is 'tdx_guest'"):
        b.evidence(RD)
    with pytest.raises(EvidenceError, match="does not exist") as err:
        tsm.get_report(tmp_path / "nope", RD)
    assert err.value.hint and "configfs" in err.value.hint


# --- /dev/sev-guest ------------------------------------------------------------------------


class FakeSevGuest:
    """Plays the sev-guest driver: decodes the request structs from the addresses packed into
    snp_guest_request_ioctl and fills the response as the firmware would."""

    def __init__(self, report: bytes, table: bytes, *, busy: int = 0, fw_error: int = 0,
                 need: int | None = None) -> None:
        self.report, self.table, self.busy, self.fw_error = report, table, busy, fw_error
        self.need = need if need is not None else len(table)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        msg_version, req_addr, resp_addr, _ = struct.unpack("<B7xQQQ", bytes(arg))
        ext = request == 0xC0205302
        assert request in (0xC0205300, 0xC0205302)  # _IOWR('S', 0/2, 32-byte struct)
        req = ctypes.string_at(req_addr, 112 if ext else 96)
        user_data, vmpl = struct.unpack_from("<64sI", req)
        call = {"msg_version": msg_version, "ext": ext, "user_data": user_data, "vmpl": vmpl}
        if ext:
            call["certs_addr"], call["certs_len"] = struct.unpack_from("<QI", req, 96)
        self.calls.append(call)

        def fail(exitinfo2: int) -> int:
            arg[24:32] = struct.pack("<Q", exitinfo2)
            raise OSError(errno.EIO, "Input/output error")

        if self.busy:
            self.busy -= 1
            return fail(2 << 32)
        if self.fw_error:
            return fail(self.fw_error)
        if ext and call["certs_len"] < self.need:
            ctypes.memmove(req_addr + 104, struct.pack("<I", self.need), 4)
            return fail(1 << 32)
        resp = struct.pack("<II24x", 0, len(self.report)) + self.report
        ctypes.memmove(resp_addr, resp, len(resp))
        if ext:
            ctypes.memmove(call["certs_addr"], self.table, len(self.table))
        return 0


def test_sev_guest_ext_report_retries_with_the_size_the_firmware_asked(
    tmp_path: Path, milan: dict[str, Any]
) -> None:
    from enarx.attestation.snp import verify_report

    root = _tree(tmp_path, "sev_snp", nodes=("/dev/sev-guest",))
    table = cert_table([("vcek", milan["vcek"]), ("ask", milan["ask"]), ("ark", milan["ark"])])
    fake = FakeSevGuest(milan["report"], table, need=5 * 4096 + 100)
    b = SnpBackend(root)
    b.ioctl = fake
    assert b.available()
    ev = b.evidence(RD)
    assert [c["certs_len"] for c in fake.calls] == [4 * 4096, 6 * 4096]  # page-rounded
    assert all(c["msg_version"] == 1 and c["user_data"] == RD and c["vmpl"] == 0
               for c in fake.calls)
    assert ev.provider == "sev-guest" and ev.blob == milan["report"]
    assert ev.certs == (milan["vcek"], milan["ask"], milan["ark"])
    verify_report(ev.blob, cert=ev.certs[0], chain=ev.certs[1:], at=milan["at"])


def test_sev_guest_plain_report_and_busy_retry(tmp_path: Path, milan: dict[str, Any]) -> None:
    dev = _tree(tmp_path, nodes=("/dev/sev-guest",)) / "dev/sev-guest"
    fake = FakeSevGuest(milan["report"], b"", busy=1)
    got = sev_guest.get_report(dev, RD, vmpl=2, extended=False, ioctl=fake)
    assert got.report == milan["report"] and got.certs == b""
    assert len(fake.calls) == 2 and fake.calls[-1]["vmpl"] == 2 and not fake.calls[0]["ext"]


def test_sev_guest_firmware_error_is_reported(tmp_path: Path) -> None:
    dev = _tree(tmp_path, nodes=("/dev/sev-guest",)) / "dev/sev-guest"
    with pytest.raises(EvidenceError, match="fw_error 0x16"):
        sev_guest.get_report(dev, RD, ioctl=FakeSevGuest(b"", b"", fw_error=0x16))
    with pytest.raises(EvidenceError, match="cannot open"):
        sev_guest.get_report(tmp_path / "missing", RD, ioctl=FakeSevGuest(b"", b""))


def test_struct_layouts_match_the_uapi_header() -> None:
    assert sev_guest.GUEST_REQ.size == 32
    assert sev_guest.REPORT_REQ.size == 96
    assert sev_guest.EXT_REPORT_REQ.size == 112
    assert sev_guest.SNP_GET_REPORT == 0xC0205300
    assert sev_guest.SNP_GET_EXT_REPORT == 0xC0205302


@pytest.mark.parametrize("bad", [b"", bytes(23), uuid.uuid4().bytes + struct.pack("<II", 24, 99)
                                 + bytes(24)])
def test_cert_table_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(EvidenceError):
        sev_guest.parse_cert_table(bad)


def test_cert_table_keeps_unknown_guids_and_vlek() -> None:
    other = uuid.uuid4()
    table = cert_table([("vlek", b"L"), ("ask", b"A")])
    # Append an unknown entry by rebuilding with a raw GUID.
    raw = other.bytes + struct.pack("<II", 48, 1) + bytes(24) + b"Z"
    assert sev_guest.parse_cert_table(raw) == {str(other): b"Z"}
    parsed = sev_guest.parse_cert_table(table)
    assert parsed == {"vlek": b"L", "ask": b"A"}
    assert sev_guest.ordered_certs(parsed) == (b"L", b"A")


# --- Gramine (SGX) -------------------------------------------------------------------------


def _gramine(tmp_path: Path, kind: str, quote: bytes) -> Path:
    root = _tree(tmp_path, "sgx sgx_lc", nodes=("/dev/sgx_enclave", "/dev/sgx_provision"))
    att = root / "dev/attestation"
    att.mkdir()
    (att / "attestation_type").write_text(kind)
    (att / "user_report_data").write_bytes(bytes(64))
    (att / "quote").write_bytes(quote)
    return root


def test_sgx_via_gramine(tmp_path: Path) -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    root = _gramine(tmp_path, "dcap", v.quote)
    b = SgxBackend(root)
    assert b.available()
    ev = b.evidence(RD)
    assert (root / "dev/attestation/user_report_data").read_bytes() == RD
    assert ev.kind == "sgx-quote" and ev.provider == "gramine"
    assert v.verify(ev.blob).platform.value == "sgx"


def test_sgx_gramine_wrong_type(tmp_path: Path) -> None:
    b = SgxBackend(_gramine(tmp_path, "epid", b"q"))
    assert not b.available()
    with pytest.raises(EvidenceError, match="'epid'") as err:
        b.evidence(RD)
    assert "dcap" in (err.value.hint or "")


# --- probes --------------------------------------------------------------------------------

Probe = Callable[[Path], Any]


@pytest.mark.parametrize(("backend", "flags", "nodes", "tsm_dir", "failing"), [
    # KvmBackend (a QEMU VM per workload) is probed in tests/vm/test_launch.py.
    (SnpBackend, "sev_snp", ("/dev/sev-guest",), False, []),
    (SnpBackend, "sev_snp", (), True, []),
    (SnpBackend, "", (), False, ["mode"]),  # neither guest nor host: tests/platform/test_launchmode.py
    (TdxBackend, "tdx_guest", ("/dev/tdx_guest",), True, []),
    (TdxBackend, "tdx_guest", ("/dev/tdx_guest",), False, ["configfs-tsm"]),
    (SgxBackend, "sgx", ("/dev/sgx_enclave",), False,
     ["/dev/sgx_provision", "gramine /dev/attestation (dcap)"]),
])
def test_probes(tmp_path: Path, backend: Any, flags: str, nodes: tuple[str, ...],
                tsm_dir: bool, failing: list[str]) -> None:
    b = backend(_tree(tmp_path, flags, nodes, tsm_dir))
    checks = b.probe()
    assert [c.name for c in checks if not c.passed] == failing
    assert all(c.hint and "\n" not in c.hint for c in checks)
    assert b.available() == (not failing)


def test_kvm_has_no_evidence_and_is_not_confidential(tmp_path: Path) -> None:
    b = KvmBackend(_tree(tmp_path, "svm", ("/dev/kvm",)))
    assert not b.confidential and b.warning
    with pytest.raises(EvidenceError):
        b.evidence(RD)
