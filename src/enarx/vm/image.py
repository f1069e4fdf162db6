"""The VM Keep image: a pinned Debian kernel plus a reproducible initramfs.

The initramfs holds busybox (Debian ``busybox-static``), this host's ``/usr/bin/python3.11``
(Debian ``python3.11-minimal``) with its stdlib, the site-packages enarx needs at run time
(wasmtime with its shared library, click, certifi), enarx itself and the init script from
``enarx/vm/guest/init``. The archive is sorted with fixed owners, modes and mtimes and
gzip-compressed with mtime 0 and no name, so the same inputs give byte-identical files
wherever they are built. Images are cached under ``$XDG_CACHE_HOME/enarx/vm-images/<key>``
where the key is a digest over every input's path, mode and content.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enarx.errors import ResourceError
from enarx.fsutil import atomic_write, cache_dir
from enarx.vm.cpio import CpioEntry, gzip_bytes, write_newc

__all__ = [
    "DEFAULT_APPEND", "FORMAT", "KERNEL_PACKAGE", "KERNEL_RELEASE", "ImageError", "ImageFile",
    "ImageInputs", "KeepImage", "build_image", "default_inputs", "image_cache_dir",
    "image_status", "load_image",
]

#: Bump when the layout changes: a different format is a different image.
FORMAT = 1
#: The kernel the image is pinned to (Debian 12's generic flavour: the cloud one has no 9p).
PINNED_KERNEL_RELEASE = "6.1.0-57-amd64"


def _kernel_release() -> str:
    """The pinned release when installed; else ``ENARX_VM_KERNEL_RELEASE`` or the newest
    installed generic ``-amd64`` kernel (Debian drops superseded kernel ABIs from its
    mirrors, so a new machine may only get a newer one). The release is part of the image
    key and manifest, so another kernel is always another image with another digest."""
    env = os.environ.get("ENARX_VM_KERNEL_RELEASE")
    if env:
        return env
    if Path(f"/boot/vmlinuz-{PINNED_KERNEL_RELEASE}").exists():
        return PINNED_KERNEL_RELEASE
    found = sorted(p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*-amd64")
                   if not p.name.endswith("-cloud-amd64"))
    return found[-1] if found else PINNED_KERNEL_RELEASE


KERNEL_RELEASE = _kernel_release()
KERNEL_PACKAGE = f"linux-image-{KERNEL_RELEASE}"
DEFAULT_APPEND = "console=ttyS0 quiet panic=-1 rdinit=/init"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initramfs.img"
MANIFEST_NAME = "manifest.json"
#: Third-party modules `enarx run` imports, with and without an Enarx.toml (checked by
#: listing ``sys.modules`` after a run); the pydantic ones are for the config, cryptography
#: (+ cffi's backend) for TLS listeners and evidence, httpx and its stack for the steward and
#: package fetches, cbor2/rfc8785 for evidence and runtime-data encodings, joserfc to open
#: the JWEs a steward releases resources in (encrypted directories' keys).
SITE_PACKAGES = ("_cffi_backend", "annotated_types", "anyio", "cbor2", "certifi", "click",
                 "cryptography", "h11", "httpcore", "httpx", "idna", "joserfc", "pydantic",
                 "pydantic_core", "rfc8785", "typing_extensions",
                 "typing_inspection", "wasmtime")
#: Kernel modules, in dependency order (insmod has no resolver).
MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/fs/netfs/netfs.ko",
    "kernel/fs/fscache/fscache.ko",
    "kernel/net/9p/9pnet.ko",
    "kernel/net/9p/9pnet_virtio.ko",
    "kernel/fs/9p/9p.ko",
    # /dev/sev-guest: SNP evidence when the image is launched as an SNP guest (hostlaunch);
    # elsewhere insmod fails quietly (no SNP) and nothing changes.
    "kernel/drivers/virt/coco/sev-guest/sev-guest.ko",
)
BUSYBOX_APPLETS = ("cat", "echo", "insmod", "ip", "ln", "ls", "mkdir", "mount", "poweroff",
                   "sh", "sleep", "umount")
#: Stdlib parts no workload path uses (GUI, tests, packaging tools).
STDLIB_EXCLUDE = frozenset({
    "__pycache__", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "site-packages", "dist-packages", "venv", "turtle.py",
    "config-3.11-x86_64-linux-gnu",
})
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)$")
_DIR = stat.S_IFDIR | 0o755


class ImageError(ResourceError):
    """The Keep image could not be built or is not what its manifest says."""

    default_hint = "rebuild it with `enarx keep image build`"


@dataclass(frozen=True)
class ImageInputs:
    """Where the pinned inputs live on this host."""

    kernel: Path
    modules: Path
    python: Path
    stdlib: Path
    busybox: Path
    site: tuple[tuple[str, Path], ...]
    enarx: Path


@dataclass(frozen=True)
class ImageFile:
    path: Path
    size: int
    sha256: str
    sha384: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "size": self.size, "sha256": self.sha256,
                "sha384": self.sha384}


@dataclass(frozen=True)
class KeepImage:
    """A built image: ``kernel`` and ``initrd`` files plus the input ``key``."""

    directory: Path
    key: str
    kernel: ImageFile
    initrd: ImageFile
    append: str
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key, "kernel_release": KERNEL_RELEASE,
                "kernel": self.kernel.to_dict(), "initrd": self.initrd.to_dict(),
                "append": self.append}


def _missing(what: str, path: Path, package: str) -> ImageError:
    return ImageError(f"{what} not found at {path}",
                      hint=f"install the Debian package: apt-get install {package}")


def default_inputs() -> ImageInputs:
    """The pinned inputs on this host, or an ImageError naming the package to install."""
    kernel = Path(f"/boot/vmlinuz-{KERNEL_RELEASE}")
    modules = Path(f"/lib/modules/{KERNEL_RELEASE}")
    for what, path, pkg in (("kernel", kernel, KERNEL_PACKAGE), ("kernel modules", modules,
                            KERNEL_PACKAGE), ("python3.11", Path("/usr/bin/python3.11"),
                            "python3.11-minimal"), ("busybox", Path("/bin/busybox"),
                            "busybox-static"), ("python3.11 stdlib",
                            Path("/usr/lib/python3.11/os.py"), "libpython3.11-stdlib")):
        if not path.exists():
            raise _missing(what, path, pkg)
    site = []
    for name in SITE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise ImageError(f"python package {name} is not installed",
                             hint="install enarx with its dependencies (pip install -e .)")
        where = (next(iter(spec.submodule_search_locations))
                 if spec.submodule_search_locations else spec.origin)
        site.append((name, Path(str(where))))
    return ImageInputs(kernel=kernel, modules=modules, python=Path("/usr/bin/python3.11"),
                       stdlib=Path("/usr/lib/python3.11"), busybox=Path("/bin/busybox"),
                       site=tuple(site), enarx=Path(__file__).resolve().parent.parent)


def _walk(root: Path, exclude: frozenset[str] = frozenset()) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude and d != "__pycache__")
        for f in sorted(filenames):
            if f in exclude or f.endswith((".pyc", ".pyo")):
                continue
            p = Path(dirpath) / f
            if p.is_file():
                yield p


def _file_mode(src: Path) -> int:
    return stat.S_IFREG | (0o755 if os.stat(src).st_mode & 0o111 else 0o644)


def _ldd(binaries: list[Path]) -> set[str]:
    libs: set[str] = set()
    for start in range(0, len(binaries), 64):
        chunk = [str(b) for b in binaries[start:start + 64]]
        proc = subprocess.run(["ldd", *chunk], capture_output=True, text=True, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise ImageError(f"a shared library of the image is missing: {line.strip()}",
                                 hint="install the library's Debian package")
            m = _LDD_LINE.match(line)
            if m:
                libs.add(m.group(1))
    return libs


def _plan(inputs: ImageInputs) -> dict[str, tuple[int, Path | bytes]]:
    """archive path -> (mode, source file or bytes), without directories."""
    plan: dict[str, tuple[int, Path | bytes]] = {}
    reg = stat.S_IFREG

    def add_tree(root: Path, dest: str, exclude: frozenset[str] = frozenset()) -> None:
        for p in _walk(root, exclude):
            plan[f"{dest}/{p.relative_to(root).as_posix()}"] = (_file_mode(p), p)

    init = inputs.enarx / "vm" / "guest" / "init"
    plan["init"] = (reg | 0o755, init)
    plan["bin/busybox"] = (reg | 0o755, inputs.busybox)
    for applet in BUSYBOX_APPLETS:
        plan[f"bin/{applet}"] = (stat.S_IFLNK | 0o777, b"busybox")
    plan["usr/bin/python3.11"] = (reg | 0o755, inputs.python)
    plan["usr/bin/python3"] = (stat.S_IFLNK | 0o777, b"python3.11")
    add_tree(inputs.stdlib, "usr/lib/python3.11", STDLIB_EXCLUDE)
    for name, root in inputs.site:
        if root.is_dir():
            add_tree(root, f"opt/enarx/site/{name}")
        else:  # a single-module distribution (typing_extensions.py)
            plan[f"opt/enarx/site/{root.name}"] = (_file_mode(root), root)
    add_tree(inputs.enarx, "opt/enarx/site/enarx")
    for mod in MODULES:
        plan[f"lib/modules/{KERNEL_RELEASE}/{mod}"] = (reg | 0o644, inputs.modules / mod)
    plan["etc/enarx-modules"] = (reg | 0o644, "".join(m + "\n" for m in MODULES).encode())
    plan["etc/enarx-kernel-release"] = (reg | 0o644, (KERNEL_RELEASE + "\n").encode())
    elves = [src for mode, src in plan.values() if isinstance(src, Path)
             and (src == inputs.python or src.suffix == ".so" or ".so." in src.name)]
    for lib in sorted(_ldd(elves)):
        plan[lib.lstrip("/")] = (reg | 0o755, Path(os.path.realpath(lib)))
    return plan


def _read(src: Path | bytes) -> bytes:
    if isinstance(src, bytes):
        return src
    try:
        return src.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image input {src}: {exc.strerror}",
                         hint="check the file's permissions, or reinstall its package") from None


def _members_key(plan: dict[str, tuple[int, Path | bytes]]) -> str:
    """A digest over (path, mode, content digest) of every archive member. Each input is read
    and dropped in turn: a cache hit never holds the whole image in memory."""
    key = hashlib.sha256(f"enarx-keep-image/{FORMAT}\n".encode())
    for path in sorted(plan):
        mode, src = plan[path]
        digest = hashlib.sha256(_read(src)).hexdigest()
        key.update(f"{path}\0{mode:o}\0{digest}\n".encode())
    return key.hexdigest()


def _entries(plan: dict[str, tuple[int, Path | bytes]]) -> list[CpioEntry]:
    """The archive entries: every member, its parent directories and /dev/console."""
    dirs = {"dev", "proc", "sys", "tmp", "root"}
    entries = [CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))]
    for path in sorted(plan):
        mode, src = plan[path]
        entries.append(CpioEntry(path, mode, _read(src)))
        parent = path.rpartition("/")[0]
        while parent:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    entries.extend(CpioEntry(d, _DIR) for d in dirs)
    return entries


def _image_key(members_key: str, kernel: bytes) -> str:
    return hashlib.sha256(f"{members_key}\nkernel\0{hashlib.sha256(kernel).hexdigest()}"
                          .encode()).hexdigest()


def _describe(path: Path, data: bytes) -> ImageFile:
    return ImageFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                     sha384=hashlib.sha384(data).hexdigest())


def image_cache_dir() -> Path:
    """``$ENARX_VM_IMAGE_CACHE`` or ``$XDG_CACHE_HOME/enarx/vm-images``."""
    return cache_dir("vm-images", env="ENARX_VM_IMAGE_CACHE")


def load_image(directory: Path, *, cached: bool = True) -> KeepImage:
    """The image in ``directory``, re-hashed against its manifest (ImageError if it differs)."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        files = {}
        for part in ("kernel", "initrd"):
            want = manifest[part]
            data = (directory / want["file"]).read_bytes()
            got = _describe(directory / want["file"], data)
            if not (hmac.compare_digest(got.sha256, str(want["sha256"]))
                    and hmac.compare_digest(got.sha384, str(want["sha384"]))):
                raise ImageError(f"the Keep image's {part} in {directory} does not match its "
                                 "manifest (corrupt or modified)")
            files[part] = got
        return KeepImage(directory=directory, key=str(manifest["key"]), kernel=files["kernel"],
                         initrd=files["initrd"], append=str(manifest["append"]), cached=cached)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"no valid Keep image in {directory}: {exc}") from None


def image_status(inputs: ImageInputs | None = None, *,
                 cache: Path | None = None) -> dict[str, Any]:
    """What `enarx platform info` shows about the image, without building it:
    ``{"state": "ready"|"not built"|"inputs missing", "key", "directory", "initrd_size", "hint"}``."""
    try:
        inputs = inputs or default_inputs()
        key = _image_key(_members_key(_plan(inputs)), _read(inputs.kernel))
    except ImageError as e:
        return {"state": "inputs missing", "detail": e.message, "hint": e.hint}
    slot = (cache if cache is not None else image_cache_dir()) / key
    try:
        image = load_image(slot)
    except ImageError:
        return {"state": "not built", "key": key,
                "hint": "`enarx keep image build` (the first VM Keep run also builds it)"}
    return {"state": "ready", "key": key, "directory": str(slot),
            "initrd_size": image.initrd.size, "initrd_sha256": image.initrd.sha256}


def _is_valid(directory: Path) -> bool:
    try:
        load_image(directory)
    except ImageError:
        return False
    return True


def _write_image(directory: Path, key: str, kernel: bytes, initrd: bytes) -> KeepImage:
    directory.mkdir(parents=True, exist_ok=True)
    k = _describe(directory / KERNEL_NAME, kernel)
    i = _describe(directory / INITRD_NAME, initrd)
    image = KeepImage(directory=directory, key=key, kernel=k, initrd=i, append=DEFAULT_APPEND,
                      cached=False)
    atomic_write(k.path, kernel)
    atomic_write(i.path, initrd)
    atomic_write(directory / MANIFEST_NAME,
                 (json.dumps(image.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return image


def build_image(inputs: ImageInputs | None = None, *, cache: Path | None = None,
                out: Path | None = None, force: bool = False) -> KeepImage:
    """Build (or reuse from the cache) the Keep image; with ``out``, also write it there."""
    inputs = inputs or default_inputs()
    plan = _plan(inputs)
    kernel = _read(inputs.kernel)
    key = _image_key(_members_key(plan), kernel)
    root = cache if cache is not None else image_cache_dir()
    slot = root / key
    image: KeepImage | None = None
    if not force and (slot / MANIFEST_NAME).exists():
        try:
            image = load_image(slot)
        except ImageError:
            image = None  # corrupt cache entry: rebuild it below
    if image is None:
        initrd = gzip_bytes(write_newc(_entries(plan)))
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        except OSError as exc:
            raise ImageError(f"cannot write the image cache {root}: {exc.strerror}",
                             hint="set ENARX_VM_IMAGE_CACHE to a writable directory") from None
        try:
            _write_image(tmp, key, kernel, initrd)
            if slot.exists() and not _is_valid(slot):
                shutil.rmtree(slot, ignore_errors=True)
            # A concurrent build of the same key may have won; its files are byte-identical.
            with contextlib.suppress(OSError):
                os.rename(tmp, slot)
        except OSError as exc:
            raise ImageError(f"cannot write the image cache {root}: {exc.strerror}",
                             hint="set ENARX_VM_IMAGE_CACHE to a writable directory") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        image = load_image(slot, cached=False)
    if out is not None:
        image = _copy_out(image, out)
    return image


def _copy_out(image: KeepImage, out: Path) -> KeepImage:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in (KERNEL_NAME, INITRD_NAME, MANIFEST_NAME):
            atomic_write(out / name, (image.directory / name).read_bytes())
    except OSError as exc:
        raise ImageError(f"cannot write the image to {out}: {exc.strerror}",
                         hint="choose a writable --out directory") from None
    return load_image(out, cached=image.cached)
