"""`enarx platform info` for kvm (platform/kvm.py): QEMU and its version, /dev/kvm, the cached
KVM probe or the TCG fallback, and the Keep image's status — without building or booting
anything. Here rather than in tests/platform so it shares the session's image (vm_env)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enarx.vm.image import load_image
from tests.cliutil import RunEnarx


def _kvm(enarx: RunEnarx, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    r = enarx("platform", "info", "--json", env=env)
    assert r.returncode == 0, r.stderr
    [row] = [b for b in json.loads(r.stdout)["backends"] if b["backend"] == "kvm"]
    table = enarx("platform", "info", env={**env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    return row, table.stdout.decode()


def test_kvm_info_reports_qemu_accelerator_and_image(enarx: RunEnarx, vm_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    from enarx.vm.launcher import qemu_version

    empty = tmp_path / "no-images"
    xdg = tmp_path / "xdg"
    row, table = _kvm(enarx, {"ENARX_VM_IMAGE_CACHE": str(empty), "XDG_CACHE_HOME": str(xdg)})
    details = row["details"]
    assert details["qemu"] == qemu_version()
    assert row["checks"][0] == {"name": "qemu-system-x86_64", "passed": True,
                                "detail": f"QEMU {qemu_version()}",
                                "hint": "install qemu-system-x86 (7.2 or newer)"}
    assert details["image"]["state"] == "not built" and len(details["image"]["key"]) == 64
    assert "keep image" in table and "not built yet" in table
    # Looking never builds an image nor boots a probe.
    assert not empty.exists() and not (xdg / "enarx/vm/kvm-probe.json").exists()

    # The session's image, and a cached probe that said TCG (as on this PVM host).
    probe = xdg / "enarx/vm/kvm-probe.json"
    probe.parent.mkdir(parents=True)
    probe.write_text(json.dumps({"qemu": qemu_version(), "kernel": "/k", "initrd": "/i",
                                 "accel": "tcg", "why": "a probe boot under KVM did not "
                                 "reach init (timed out)"}))
    env = {"ENARX_VM_IMAGE_CACHE": vm_env["ENARX_VM_IMAGE_CACHE"], "XDG_CACHE_HOME": str(xdg)}
    row, table = _kvm(enarx, env)
    image = row["details"]["image"]
    built = load_image(Path(image["directory"]))
    assert image["state"] == "ready" and image["key"] == built.key
    assert image["initrd_size"] == built.initrd.size
    assert f"initramfs {built.initrd.size / 2**20:.1f} MiB" in table
    if row["details"]["kvm_device"] == "present":
        assert row["details"]["accelerator"] == "tcg"
        assert "TCG fallback: a probe boot under KVM did not reach init" in table
    else:
        assert "no usable /dev/kvm" in table
    assert row["details"]["probe"]["why"].startswith("a probe boot under KVM")
