"""``enarx run --backend sev-snp|tdx`` on a confidential-computing *host*: boot the Keep image as
an SEV-SNP guest or a TD, with SNP HOST_DATA / TDX MRCONFIGID set to the workload's identity.

Which mode applies is decided once, in ``enarx.platform.launchmode``; this module turns a host
decision into a :class:`HostLaunch` (or a clear error naming what the host lacks) and the
launcher (``enarx.vm.launcher``) boots it with ``command_line("snp"|"tdx", ...)``. Inside the
VM the agent runs the workload in-process, and the sev-snp/tdx backend there is in guest mode
(configfs-tsm evidence), exactly as on any confidential VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from enarx.errors import PlatformError

if TYPE_CHECKING:
    from enarx.config import Source

__all__ = ["HostLaunch", "guest_kernel_lacks", "identity_binding", "plan"]

#: Kernel options the image's kernel needs to boot (and get evidence) as each kind of guest.
_GUEST_OPTIONS = {"snp": ("CONFIG_AMD_MEM_ENCRYPT", "CONFIG_SEV_GUEST"),
                  "tdx": ("CONFIG_INTEL_TDX_GUEST",)}


@dataclass(frozen=True)
class HostLaunch:
    """A confidential launch: QEMU mode, firmware and the launch field's bytes."""

    mode: Literal["snp", "tdx"]
    firmware: str
    #: SNP HOST_DATA (32 bytes) or TDX MRCONFIGID (48 bytes): ``launch_binding(identity)``.
    identity: bytes
    #: The workload identity (``sha384:…``) the field binds; for messages and the docs.
    workload: str


def identity_binding(mode: str, identity: str) -> bytes:
    """The launch field for ``identity``: SNP HOST_DATA (32 bytes) / TDX MRCONFIGID (48)."""
    from enarx.workload import HOST_DATA_SIZE, MRCONFIGID_SIZE, launch_binding

    return launch_binding(identity, HOST_DATA_SIZE if mode == "snp" else MRCONFIGID_SIZE)


def guest_kernel_lacks(mode: str, kernel_config: str) -> list[str]:
    """The options of :data:`_GUEST_OPTIONS` that ``kernel_config`` (a /boot/config-*) lacks."""
    have = {k for k, _, v in (ln.partition("=") for ln in kernel_config.splitlines())
            if v in ("y", "m")}
    return [opt for opt in _GUEST_OPTIONS[mode] if opt not in have]


def _check_kernel(mode: str, label: str) -> None:
    from enarx.vm.image import KERNEL_RELEASE

    path = Path(f"/boot/config-{KERNEL_RELEASE}")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return  # no config to read: the boot itself will tell
    lacks = guest_kernel_lacks(mode, text)
    if lacks:
        raise PlatformError(f"the Keep image's kernel {KERNEL_RELEASE} cannot boot as {label} "
                            f"guest: {path} lacks " + ", ".join(lacks),
                            hint="install a kernel built with " + "=y, ".join(lacks) + "=y "
                            "and point ENARX_VM_KERNEL_RELEASE at it (docs/vm-keeps.md)")


def plan(backend: Any, wasm: bytes, source: Source | None, *, dirs: list[Any],
         args: tuple[str, ...], env: list[tuple[str, str]], fd_env: bool) -> HostLaunch:
    """The launch for ``backend`` (an SnpBackend/TdxBackend in host mode); PlatformError naming
    the first missing piece (QEMU too old, no firmware) otherwise."""
    mode_name = backend.vm_mode()
    if mode_name not in ("snp", "tdx"):
        raise PlatformError(f"the {backend.name} backend does not launch VMs here",
                            hint="see `enarx platform info`")
    decided = backend.mode()
    label = "SEV-SNP" if mode_name == "snp" else "TDX"
    for piece in decided.missing:
        raise PlatformError(f"cannot launch {label} VM Keeps on this host: {piece.name}: "
                            f"{piece.detail}", hint=piece.hint or None)
    firmware = str(decided.firmware)
    _check_kernel(mode_name, "an SEV-SNP" if mode_name == "snp" else "a TDX")
    if mode_name == "snp":
        from enarx.vm.measure import _check_ovmf

        _check_ovmf(Path(firmware))  # no kernel-hashes: the image would go unmeasured
    from enarx.vm.simlaunch import run_identity

    ident = run_identity(wasm, source, dirs=dirs, args=args, env=env, fd_env=fd_env)
    return HostLaunch(mode=mode_name, firmware=firmware,
                      identity=identity_binding(mode_name, ident), workload=ident)
