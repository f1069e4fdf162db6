"""Boot one QEMU VM per workload and run it there through the in-VM agent (``enarx.vm.agent``).

QEMU runs with ``-display none``, explicit chardevs and stdin from /dev/null, in its own
session (Ctrl-C reaches enarx, which tears it down) and with PR_SET_PDEATHSIG so it dies with
enarx even on SIGKILL. A boot that does not reach the agent in time is retried once.
``-accel kvm`` is used only when a probe boot under KVM reached the agent (cached per
QEMU + image); otherwise TCG, with one warning line saying why.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enarx.errors import Interrupted, PlatformError, Timeout
from enarx.vm.agent import encode, read_frame
from enarx.vm.network import NetSpec
from enarx.vm.qemu import VmSpec, command_line

if TYPE_CHECKING:
    from enarx.config import Source
    from enarx.vm.hostlaunch import HostLaunch
    from enarx.vm.simlaunch import SimPlan
from enarx.vm.shares import Share

__all__ = ["APPEND", "BOOT_TIMEOUT", "Keep", "VmRequest", "cached_probe", "choose_accel", "qemu_version",
           "run_cli", "run_in_vm"]

#: The kernel command line when the caller names none (the image records its own).
APPEND = "console=ttyS0 quiet panic=-1 rdinit=/init"
#: Seconds from QEMU start to the agent's hello (TCG boots in ~8 s on an idle 2-core host).
BOOT_TIMEOUT = float(os.environ.get("ENARX_VM_BOOT_TIMEOUT", "60"))
PROBE_TIMEOUT = 20.0  # KVM boots the image in a few seconds where it works
_PR_SET_PDEATHSIG = 1
_OVERHEAD_MIB = 320  # kernel + python + wasmtime inside the VM


@dataclass(frozen=True)
class VmRequest:
    """Everything the agent needs to run one workload (what `enarx run` would use on nil)."""

    wasm: bytes
    argv0: str
    config: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    max_memory: int | None = None
    timeout: float | None = None
    fuel: int | None = None
    fd_env: bool = True
    #: The VM's NIC (vm/network.py); None: no network device.
    net: NetSpec | None = None
    #: More request keys for the agent (``net``, ``mode``/``deploy``, ``dirs``, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Pre-opened host directories, one virtio-9p device each (vm/shares.py).
    shares: tuple[Share, ...] = ()
    #: A confidential launch on an SNP/TDX host (vm/hostlaunch.py); None: kvm or TCG.
    launch: HostLaunch | None = None
    #: A sim VM Keep (vm/simlaunch.py): the host measures the launch as the PSP would.
    sim: SimPlan | None = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def qemu_version(qemu: str = "qemu-system-x86_64") -> str | None:
    """``"7.2.22"`` or None when QEMU is missing."""
    path = shutil.which(qemu)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    return words[3] if len(words) > 3 and words[2] == "version" else (words[-1] if words else "")


def _need_qemu(mode: str = "kvm") -> str:
    from enarx.platform.launchmode import MIN_QEMU, qemu_too_old

    version = qemu_version()
    if version is None:
        raise PlatformError("qemu-system-x86_64 not found: the kvm backend boots each "
                            "workload in a QEMU VM", hint="install qemu-system-x86")
    if (old := qemu_too_old(mode, version)) is not None:
        need = ".".join(map(str, MIN_QEMU[mode]))
        raise PlatformError(old, hint=f"install qemu-system-x86 {need} or newer")
    return version


class Keep:
    """One booted VM with its agent connected; always use as a context manager."""

    def __init__(self, mode: str, kernel: str, initrd: str, memory_mib: int,
                 append: str = APPEND, net: NetSpec | None = None,
                 shares: tuple[Share, ...] = (), launch: HostLaunch | None = None) -> None:
        self.mode = mode
        self.tmp = tempfile.mkdtemp(prefix="enarx-vm-")
        self.spec = VmSpec(kernel=kernel, initrd=initrd, append=append,
                           agent_socket=os.path.join(self.tmp, "agent.sock"),
                           console_log=os.path.join(self.tmp, "console.log"),
                           memory_mib=memory_mib, net=net, shares=shares,
                           firmware=launch.firmware if launch else None,
                           identity=launch.identity if launch else b"")
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def __enter__(self) -> Keep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def boot(self, timeout: float) -> None:
        """Start QEMU and wait for the agent's hello; raises PlatformError on failure."""
        argv = command_line(self.mode, self.spec)
        try:
            with open(os.path.join(self.tmp, "qemu.err"), "wb") as err:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                    preexec_fn=_die_with_parent)
        except OSError as e:
            raise PlatformError(f"cannot start {argv[0]}: {e.strerror or e}",
                                hint="check the QEMU installation: `enarx platform info`") from None
        deadline = time.monotonic() + timeout
        while self.sock is None:
            if self.proc.poll() is not None:
                from enarx.vm.network import qemu_error

                if (fwd := qemu_error(self._why(), self.spec.net)) is not None:
                    raise fwd
                raise PlatformError(f"QEMU exited ({self.proc.returncode}) before the VM "
                                    f"booted: {self._why()}", hint="see `enarx platform info`")
            if time.monotonic() > deadline:
                raise _BootTimeout(f"the VM Keep did not boot within {timeout:.0f} s")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.spec.agent_socket)
                self.sock = s
            except OSError:
                s.close()
                time.sleep(0.05)
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            frame = read_frame(self.sock.recv)
        except TimeoutError:
            raise _BootTimeout(f"the VM Keep did not boot within {timeout:.0f} s: "
                               f"{self._why()}") from None
        except (OSError, EOFError, ValueError):
            frame = None
        if frame is None or frame[0] != b"H":
            raise PlatformError(f"the VM Keep's agent did not start: {self._why()}",
                                hint="rebuild the image: `enarx keep image build`")
        self.sock.settimeout(None)

    def _why(self) -> str:
        for name in ("qemu.err", "console.log"):
            try:
                lines = Path(self.tmp, name).read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            if lines:
                return lines[-1][:200]
        return "no output from QEMU or the guest"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class _BootTimeout(PlatformError):
    pass


def _boot(mode: str, kernel: str, initrd: str, memory_mib: int, append: str,
          net: NetSpec | None = None, shares: tuple[Share, ...] = (),
          launch: HostLaunch | None = None) -> Keep:
    """A booted Keep; one retry after a boot timeout (TCG boots hang now and then)."""
    for attempt in (1, 2):
        keep = Keep(mode, kernel, initrd, memory_mib, append, net, shares, launch)
        try:
            keep.boot(BOOT_TIMEOUT)
            return keep
        except _BootTimeout as e:
            keep.close()
            if attempt == 2:
                raise PlatformError(f"{e.message} (tried twice)", hint="the host may be "
                                    "overloaded; raise ENARX_VM_BOOT_TIMEOUT (seconds)") from None
        except BaseException:
            keep.close()
            raise
    raise AssertionError("unreachable")


def _probe_file() -> Path:
    from enarx.fsutil import cache_dir

    return cache_dir("vm") / "kvm-probe.json"


def cached_probe() -> dict[str, str] | None:
    """The last KVM probe's result (``accel``, ``why``, ``qemu``, ``kernel``, ``initrd``)."""
    try:
        result = json.loads(_probe_file().read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def choose_accel(kernel: str, initrd: str) -> tuple[str, str]:
    """("kvm" | "tcg", why). Probes a KVM boot once per QEMU version + image and caches the
    result. ``ENARX_VM_ACCEL`` (kvm or tcg) forces a choice."""
    forced = os.environ.get("ENARX_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"forced by ENARX_VM_ACCEL={forced}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not accessible"
    key = {"qemu": _need_qemu(), "kernel": kernel, "initrd": initrd}
    cached = cached_probe()
    if cached is not None and all(cached.get(k) == v for k, v in key.items()):
        return str(cached.get("accel")), str(cached.get("why"))
    keep = Keep("kvm", kernel, initrd, 256)
    try:
        keep.boot(PROBE_TIMEOUT)
        accel, why = "kvm", "a probe boot under KVM reached the agent"
    except PlatformError as e:
        accel, why = "tcg", f"a probe boot under KVM did not reach init ({e.message})"
    finally:
        keep.close()
    from enarx.fsutil import atomic_write

    try:
        _probe_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(_probe_file(), json.dumps({**key, "accel": accel, "why": why}).encode())
    except OSError:
        pass  # an unwritable cache only costs a probe next time
    return accel, why


def _memory_mib(max_memory: int | None) -> int:
    # Guest RAM covers what the workload can use (wasmtime reserves address space, not RAM),
    # capped at 2 GiB so the default 4G limit does not ask the host for 4 GiB.
    limit = (max_memory if max_memory is not None else 1 << 30) >> 20
    return _OVERHEAD_MIB + min(max(limit, 16), 2048)


def run_in_vm(req: VmRequest, *, warn: Callable[[str], None], kernel: str | None = None,
              initrd: str | None = None, append: str = APPEND, stdin_fd: int = 0, stdout_fd: int = 1,
              stderr_fd: int = 2) -> int:
    """Run ``req`` in a fresh VM Keep; its exit code. Raises Timeout at the deadline."""
    _need_qemu(req.launch.mode if req.launch is not None else "kvm")
    if req.net is not None:
        from enarx.vm.network import check_ports

        check_ports(req.net)  # a port in use: a clear error now, not a QEMU failure later
    if kernel is None or initrd is None:
        from enarx.vm.image import build_image

        image = build_image()
        kernel, initrd = str(image.kernel.path), str(image.initrd.path)
        append = image.append  # what `enarx keep image measure` hashes
    if req.sim is not None:  # MEASUREMENT = the digest of exactly what boots below
        req.extra["sim"] = req.sim.request(kernel, initrd, append)
    if req.launch is not None:  # an SNP/TDX host: no probe, no fallback
        mode: str = req.launch.mode
    else:
        mode, why = choose_accel(kernel, initrd)
        if mode == "tcg":
            warn(f"kvm: running the VM under TCG emulation (slow): {why}")
    try:
        with _boot(mode, kernel, initrd, _memory_mib(req.max_memory), append,
                   req.net, req.shares, req.launch) as keep:
            return _converse(keep, req, stdin_fd, stdout_fd, stderr_fd)
    except KeyboardInterrupt:  # the VM is already torn down (the with block, or _boot)
        raise Interrupted("interrupted; the VM Keep was stopped") from None


def _converse(keep: Keep, req: VmRequest, stdin_fd: int, stdout_fd: int,
              stderr_fd: int) -> int:
    """Send the workload to the booted Keep's agent and relay its streams until it exits."""
    assert keep.sock is not None
    sock = keep.sock
    header = {"argv0": req.argv0, "args": list(req.args), "env": [list(p) for p in req.env],
              "max_memory": req.max_memory, "timeout": req.timeout, "fuel": req.fuel,
              "fd_env": req.fd_env, "config": req.config, **req.extra}
    sock.sendall(encode(b"R", json.dumps(header).encode()))
    sock.sendall(encode(b"M", req.wasm))
    deadline = None if req.timeout is None else time.monotonic() + req.timeout
    threading.Thread(target=_pump_stdin, args=(stdin_fd, sock), daemon=True).start()
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"the workload ran out of time ({req.timeout:g} s); the VM "
                              "was stopped")
            sock.settimeout(left)
        try:
            frame = read_frame(sock.recv)
        except TimeoutError:
            continue
        except (OSError, EOFError, ValueError):
            frame = None
        if frame is None:
            raise PlatformError(f"the VM Keep's agent died: {keep._why()}",
                                hint="re-run; if it persists, rebuild the image")
        kind, body = frame
        # A closed stdout (`| head`) raises BrokenPipeError: leaving the block tears the
        # VM down and click turns EPIPE into a quiet exit 1.
        if kind == b"O":
            _write_all(stdout_fd, body)
        elif kind == b"e":
            _write_all(stderr_fd, body)
        elif kind == b"X":
            code: int = json.loads(body)["code"]
            return code


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump_stdin(fd: int, sock: socket.socket) -> None:
    try:
        while chunk := os.read(fd, 64 * 1024):
            sock.sendall(encode(b"I", chunk))
        sock.sendall(encode(b"E"))
    except OSError:
        pass


def run_cli(wasm: bytes, argv0: str, wasmcfgfile: str | Source | None, *, dirs: list[Any],
            args: tuple[str, ...], env: list[tuple[str, str]], limits: Any, fd_env: bool,
            steward: Any, warn: Callable[[str], None], backend: Any = None) -> int:
    """``enarx run --backend kvm``: the same inputs as on nil, run in a VM Keep (and
    ``--backend sev-snp|tdx`` on an SNP/TDX host: a confidential VM, vm/hostlaunch.py;
    ``--backend sim --vm``: a sim VM Keep, vm/simlaunch.py). With a steward the Keep attests
    from inside the VM. ``wasmcfgfile``: Enarx.toml's path, or the ``config.Source`` the
    caller already parsed; either way it is read and parsed once, here or there, and that
    one parse serves the identity, the shares, the network and the request."""
    source = _read_source(wasmcfgfile) if isinstance(wasmcfgfile, str) else wasmcfgfile
    launch = None
    if backend is not None and backend.vm_mode() in ("snp", "tdx"):
        from enarx.vm.hostlaunch import plan as host_plan

        launch = host_plan(backend, wasm, source, dirs=dirs, args=args, env=env,
                           fd_env=fd_env)

    sim = None
    if backend is not None and backend.name == "sim":  # a sim VM Keep (vm/simlaunch.py)
        from enarx.vm.simlaunch import plan as sim_plan

        sim = sim_plan(backend, wasm, source, dirs=dirs, args=args, env=env,
                       fd_env=fd_env)
    from enarx.vm.shares import plan

    # Every pre-open is checked (and Enarx.toml's dir entries rewritten) before any boot.
    shares = plan(dirs, source)
    with shares:  # encrypted directories' locks: held while the VM runs, freed on a refusal
        config = shares.config
        max_memory = None if limits.max_memory == 4 << 30 else int(limits.max_memory)
        from enarx.vm.network import for_workload

        # listen/connect entries: a NIC, forwarded ports checked before any boot
        net, net_req = for_workload(source, outbound=steward is not None)
        req = VmRequest(wasm=wasm, argv0=argv0, config=config, args=tuple(args),
                        env=tuple((str(k), str(v)) for k, v in env), max_memory=max_memory,
                        timeout=limits.timeout, fuel=limits.fuel, fd_env=fd_env,
                        extra={**net_req, **({"dirs": shares.request} if shares.request else {})},
                        shares=shares.shares, net=net, launch=launch, sim=sim)
        if launch is not None:  # inside, the same backend in guest mode gives the evidence
            req.extra["backend"] = backend.name
        if steward is not None:  # the Keep attests from inside the VM (vm/simlaunch.py)
            from enarx.vm.simlaunch import steward_request

            req.extra["steward"] = steward_request(steward)
        return run_in_vm(req, warn=warn)


def _read_source(path: str) -> Source:
    """Enarx.toml at ``path``, read and parsed (for callers that pass a path)."""
    from enarx import config

    with open(path, encoding="utf-8") as fh:
        return config.parse(fh.read(), path=path)
