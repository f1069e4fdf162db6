"""`enarx keep image measure`: argument handling, error paths and the SNP launch digest.

No OVMF with SNP kernel-hashes metadata can be had on this machine (Debian's ovmf lacks it),
so the digest tests use a small firmware file laid out the way sev-snp-measure reads an
AMDSEV OVMF (footer GUID table, SEV metadata with a kernel-hashes section). It is synthetic
and says so; the digest is cross-checked against sev-snp-measure's own command line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from enarx.vm.image import build_image
from enarx.vm.measure import MeasureError, sim_launch_digest, snp_launch_digest
from enarx.vm.simfw import SIM_FIRMWARE_ID, sim_firmware

ENARX = [sys.executable, "-m", "enarx.cli.main"]
_FOOTER = "96b582de-1fb2-45f7-baea-a366c55a082d"
_HASHES = "7255371f-3a3b-4b04-927b-1da6efa8d454"
_RESET = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
_META = "dc886566-984a-4798-a75e-5585a7bf67cc"


def _entry(guid: str, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def synthetic_ovmf(path: Path, *, kernel_hashes: bool = True) -> Path:
    """A 1 MiB firmware image with the SEV tables sev-snp-measure parses (not a real OVMF)."""
    size = 1 << 20
    sections = [(0x800000, 0x9000, 1), (0x809000, 0x1000, 2), (0x80A000, 0x1000, 3)]
    if kernel_hashes:
        sections.append((0x80B000, 0x1000, 0x10))
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    meta_offset = 0x1000  # metadata starts this far from the end of the file
    table = _entry(_META, struct.pack("<I", meta_offset))
    table += _entry(_RESET, struct.pack("<I", 0xFFFFF000) + b"\0" * 16)
    table += _entry(_HASHES, struct.pack("<II", 0x80B000, 0x1000))
    footer = table + struct.pack("<H", len(table) + 18) + uuid.UUID(_FOOTER).bytes_le
    data = bytearray(b"\xa5" * size)
    data[size - meta_offset:size - meta_offset + len(meta)] = meta
    data[size - 32 - len(footer):size - 32] = footer
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("measure")
    build_image(cache=base / "cache", out=base / "img")
    return base / "img"


def _measure(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENARX, "keep", "image", "measure", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False,
                          env=dict(os.environ, ENARX_VM_IMAGE_CACHE=str(cwd / "no-cache")))


def test_digest_matches_sev_snp_measure_cli_and_tracks_every_input(image_dir: Path,
                                                                   tmp_path: Path) -> None:
    ovmf = synthetic_ovmf(tmp_path / "OVMF.amdsev.fd")
    base = ["--snp", "--ovmf", str(ovmf), "--image", str(image_dir), "--json"]
    proc = _measure([*base, "--vcpus", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["snp"]
    digest = out["launch_digest"]
    assert len(bytes.fromhex(digest)) == 48
    manifest = json.loads((image_dir / "manifest.json").read_text())
    assert out["append"] == manifest["append"] and out["vcpu_type"] == "EPYC-v4"
    assert out["initrd_sha256"] == manifest["initrd"]["sha256"]
    # The reference tool's own command line gives the same digest for the same inputs.
    ref = subprocess.run(
        [sys.executable, "-m", "sevsnpmeasure.cli", "--mode", "snp", "--vcpus", "2",
         "--vcpu-type", "EPYC-v4", "--ovmf", str(ovmf), "--kernel", str(image_dir / "vmlinuz"),
         "--initrd", str(image_dir / "initramfs.img"), "--append", manifest["append"]],
        capture_output=True, text=True, check=True, timeout=120)
    assert ref.stdout.strip() == digest
    # Human output is ready to paste into the steward policy.
    human = _measure([*base[:-1], "--vcpus", "2"], tmp_path)
    assert f'hash = ["{digest}"]' in human.stdout and "[snp]" in human.stdout
    # Every input changes the digest.
    others = {
        "append": _measure([*base, "--vcpus", "2", "--append", "console=ttyS0"], tmp_path),
        "vcpus": _measure([*base, "--vcpus", "1"], tmp_path),
        "vcpu-type": _measure([*base, "--vcpus", "2", "--vcpu-type", "EPYC-Milan"], tmp_path),
    }
    seen = {digest}
    for name, p in others.items():
        assert p.returncode == 0, (name, p.stderr)
        seen.add(json.loads(p.stdout)["snp"]["launch_digest"])
    assert len(seen) == 4
    initrd = tmp_path / "other-initrd"
    initrd.write_bytes((image_dir / "initramfs.img").read_bytes() + b"\0")
    other = snp_launch_digest(kernel=image_dir / "vmlinuz", initrd=initrd,
                              append=manifest["append"], ovmf=ovmf, vcpus=2)
    assert other.hex() not in seen


@pytest.mark.parametrize(("args", "message"), [
    ([], "exactly one of --snp and --tdx"),
    (["--snp", "--tdx"], "exactly one of --snp and --tdx"),
    (["--tdx"], "no maintained Python tool"),
    (["--snp"], "--snp needs --ovmf"),
    (["--snp", "--ovmf", "missing.fd"], "OVMF firmware not found"),
    (["--snp", "--ovmf", "garbage.fd"], "no SNP kernel-hashes metadata"),
    (["--snp", "--ovmf", "nohashes.fd"], "no SNP kernel-hashes metadata"),
    (["--snp", "--ovmf", "OVMF.amdsev.fd", "--vcpus", "0"], "--vcpus must be between"),
    (["--snp", "--ovmf", "OVMF.amdsev.fd", "--vcpu-type", "Pentium"], "unknown vCPU type"),
    (["--snp", "--sim", "--ovmf", "OVMF.amdsev.fd"], "choose one of --ovmf and --sim"),
    (["--snp", "--sim", "--vcpus", "0"], "--vcpus must be between"),
])
def test_bad_arguments_are_clear_errors(image_dir: Path, tmp_path: Path, args: list[str],
                                        message: str) -> None:
    (tmp_path / "garbage.fd").write_bytes(os.urandom(4096) * 16)
    synthetic_ovmf(tmp_path / "nohashes.fd", kernel_hashes=False)
    synthetic_ovmf(tmp_path / "OVMF.amdsev.fd")
    proc = _measure([*args, "--image", str(image_dir)], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    as_json = _measure([*args, "--image", str(image_dir), "--json"], tmp_path)
    assert as_json.returncode == 2
    assert message in json.loads(as_json.stdout)["error"]["message"]


def test_library_refuses_missing_image_files(tmp_path: Path) -> None:
    ovmf = synthetic_ovmf(tmp_path / "OVMF.amdsev.fd")
    with pytest.raises(MeasureError, match="initramfs is missing"):
        snp_launch_digest(kernel=ovmf, initrd=tmp_path / "nope", append="", ovmf=ovmf)


def test_sim_digest_is_deterministic_and_moves_with_every_input(image_dir: Path,
                                                                tmp_path: Path) -> None:
    base = ["--snp", "--sim", "--image", str(image_dir), "--json"]
    first, again = _measure(base, tmp_path), _measure(base, tmp_path)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)["snp"]
    assert first.stdout == again.stdout  # deterministic
    assert out["firmware"] == SIM_FIRMWARE_ID and out["ovmf"] is None
    assert out["vcpus"] == 1 and out["vcpu_type"] == "EPYC-v4"
    digest = out["launch_digest"]
    # The generated firmware is measured through the same library path as a real OVMF:
    # sev-snp-measure's own command line over its bytes gives the same digest.
    fw = tmp_path / "sim.fd"
    fw.write_bytes(sim_firmware())
    assert sim_firmware() == fw.read_bytes()
    manifest = json.loads((image_dir / "manifest.json").read_text())
    ref = subprocess.run(
        [sys.executable, "-m", "sevsnpmeasure.cli", "--mode", "snp", "--vcpus", "1",
         "--vcpu-type", "EPYC-v4", "--ovmf", str(fw), "--kernel", str(image_dir / "vmlinuz"),
         "--initrd", str(image_dir / "initramfs.img"), "--append", manifest["append"]],
        capture_output=True, text=True, check=True, timeout=120)
    assert ref.stdout.strip() == digest
    human = _measure(base[:-1], tmp_path)
    assert f'hash = ["{digest}"]' in human.stdout and 'allow = ["sim"]' in human.stdout
    seen = {digest}
    for extra in (["--vcpus", "2"], ["--vcpu-type", "EPYC-Milan"], ["--append", "quiet"]):
        p = _measure([*base, *extra], tmp_path)
        assert p.returncode == 0, p.stderr
        seen.add(json.loads(p.stdout)["snp"]["launch_digest"])
    kernel, initrd = image_dir / "vmlinuz", image_dir / "initramfs.img"
    for name in ("kernel", "initrd"):
        changed = tmp_path / name
        changed.write_bytes((kernel if name == "kernel" else initrd).read_bytes() + b"\0")
        args = {"kernel": kernel, "initrd": initrd, name: changed}
        seen.add(sim_launch_digest(append=manifest["append"], **args).hex())
    assert len(seen) == 6
    # A real (here: synthetic) OVMF gives another digest than the sim firmware.
    other = snp_launch_digest(kernel=kernel, initrd=initrd, append=manifest["append"],
                              ovmf=synthetic_ovmf(tmp_path / "OVMF.amdsev.fd"))
    assert other.hex() not in seen
    # Without the kernel-hashes section the sim firmware would not measure the image.
    fw.write_bytes(sim_firmware(kernel_hashes=False))
    with pytest.raises(MeasureError, match="no SNP kernel-hashes metadata"):
        snp_launch_digest(kernel=kernel, initrd=initrd, append="", ovmf=fw)
