"""``enarx deploy``: provision a package into a Keep, which attests before it gets anything.

Order of operations (docs/deploy.md), all inside the Keep (this process, on the in-process
backends), each step only after the one before it succeeded:

1. **resolve** the SPEC (:mod:`enarx.package.spec`; plain http only to loopback hosts or with
   ``--allow-insecure``) into a package tree from untrusted storage: a drawbridge tag (its
   JWS verified first when a signer is required), an OCI artifact, or a ``file://`` directory.
   The tree commits to every byte; nothing else the storage says is believed. A ``file://``
   directory is read once into memory; it is hashed only where that binds something (a
   plaintext package attested to a steward; see :func:`_local_files`).
2. the **workload identity** is the package identity: the SHA-384 of the plaintext tree's
   root directory (for an encrypted package the identity its manifest names, checked in 6).
3. **attest** to the steward for that identity (:func:`enarx.keep.attest.attest_keep`): a
   one-time key, evidence binding it, an EAR token and a certificate.
4. **key release**: the content key and the ``[[secrets]]`` come from the steward as JWE
   encrypted to the one-time key (:mod:`enarx.keep.release`) — never before step 3.
5. **fetch** every file's ciphertext, each checked against its tree entry.
6. **decrypt** in memory (:func:`enarx.package.crypt.decrypt_package`): every chunk is
   authenticated, and the recomputed plaintext identity must equal the attested one.
7. **run** ``main.wasm`` with the package's Enarx.toml through the same runner as ``enarx
   run`` (:func:`enarx.keep.agent.run_workload`); the package's ``dir`` entries are
   in-memory, read-only views of the package, secrets are env vars and ``/run/secrets``.

Nothing decrypted is written to the host disk: no temporary files, and an encrypted
package's compiled module is cached only sealed under a key derived from its content key
(:mod:`enarx.keep.sealedcache`). Non-confidential backends (``nil``, ``sim``, ``kvm``) are
refused unless ``allow_insecure``.

I/O edge (network, the package directory); no process-global state.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enarx.errors import UsageError
from enarx.package.errors import PackageError
from enarx.package.fetch import PackageSource as Source
from enarx.package.spec import Spec, check_transport, parse_spec
from enarx.package.tree import Entry, Tree

if TYPE_CHECKING:
    from enarx.keep.attest import Attested, StewardTarget
    from enarx.keep.release import Released
    from enarx.platform.base import Backend
    from enarx.runtime.cache import ModuleCache
    from enarx.runtime.run import RunLimits
    from enarx.wasi.memfs import MemTree

__all__ = [
    "INSECURE_BACKENDS",
    "PHASES",
    "DeployRequest",
    "Prepared",
    "check_backend",
    "deploy",
    "limits_for",
    "package_tree",
    "prepare",
    "run_prepared",
]

#: Backends whose memory the host can read: refused unless ``allow_insecure``.
INSECURE_BACKENDS = ("nil", "sim", "kvm")
#: Timed phases, in order (``on_phase(name, seconds)``; bench/deploy.py reports them).
PHASES = ("resolve", "attest", "key", "fetch", "decrypt", "secrets", "run")
_MAX_FILE = 1 << 30  # a single package file held in memory


@dataclass(frozen=True)
class DeployRequest:
    """What ``enarx deploy`` was asked to do (the CLI's flags, parsed)."""

    spec: str
    backend: str | None = None
    steward: StewardTarget | None = None
    #: PEM public key file whose signature the package must carry (``--signer``)
    signer: Path | None = None
    allow_insecure: bool = False
    #: host for ``USER/REPO:TAG`` SPECs (``ENARX_REGISTRY``)
    default_host: str | None = None
    #: PEM CA bundle file that signs the registry's TLS certificate (None: system roots)
    ca_bundle: Path | None = None
    #: registry bearer token (private repositories)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Prepared:
    """A package ready to run: plaintext files (memory only), its Enarx.toml, and what the
    steward gave this Keep."""

    #: the workload identity; None when nothing attests (computed on demand: :attr:`identity`)
    known_identity: str | None
    files: Mapping[str, bytes] = field(repr=False)
    config: Any
    attested: Attested | None
    encrypted: bool
    #: sealing key of the compiled-module cache (encrypted packages; keep/sealedcache.py)
    cache_key: bytes | None = field(default=None, repr=False)
    released: Released | None = field(default=None, repr=False)

    @cached_property
    def identity(self) -> str:
        """The package identity (docs/packages.md), of the very bytes that run."""
        if self.known_identity is not None:
            return self.known_identity
        from enarx.package.tree import identity_of_files

        return identity_of_files(self.files)


# --- 1. resolve ------------------------------------------------------------------------------


def _options(req: DeployRequest) -> Any:
    from enarx.package.fetch import ClientOptions

    return ClientOptions(allow_insecure=req.allow_insecure, token=req.token,
                         ca_bundle=req.ca_bundle, default_host=req.default_host)


@contextmanager
def _opened(spec: Spec, req: DeployRequest) -> Iterator[tuple[Source, Tree, Any]]:
    """The package's source, its tree and the Resolved, the signature checked first when
    required."""
    from enarx.package.fetch import open_source

    signer = None
    if req.signer is not None:
        from enarx.package import sign

        signer = sign.load_public_key(req.signer)
    src = open_source(spec, _options(req))
    try:
        resolved = src.resolve(signer)
        yield src, resolved.tree, resolved
    finally:
        src.close()


def _local_files(spec: Spec, req: DeployRequest) -> dict[str, bytes] | None:
    """The files of a ``file://`` package directory, read once and not hashed, when hashing
    them would check nothing; None otherwise (then :func:`_opened` resolves the SPEC).

    A local directory's tree is made from these very bytes and nothing signs it, so its
    digests bind the bytes only to the identity they give, and that matters only to the
    attestation: an encrypted package is vouched for by decryption instead (step 6: every
    chunk's AES-GCM tag binds it to the attested identity and its path, and the recomputed
    plaintext identity must equal the attested one); a plaintext package without a steward
    attests nothing (:attr:`Prepared.identity` hashes it on demand). A plaintext package
    with a steward is hashed for the identity it attests, and a required signer takes the
    usual path, which refuses an unsigned directory."""
    from enarx.package import crypt

    if spec.kind != "file" or spec.path is None or req.signer is not None \
            or not os.path.isdir(spec.path):
        return None
    encrypted = os.path.lexists(os.path.join(spec.path, crypt.MANIFEST_NAME))
    if not encrypted and req.steward is not None:
        return None
    from enarx.package.local import load_files

    files = load_files(Path(spec.path), max_file=_MAX_FILE)
    if encrypted and crypt.MANIFEST_NAME not in files:  # (a link, refused by load_files)
        raise PackageError("no manifest at the root", path=crypt.MANIFEST_NAME)
    return files


def _load(src: Source, path: str, entry: Entry,
          advance: Callable[[int], None] | None = None) -> bytes:
    """One file's bytes, in memory, verified against its entry (the last chunk raises
    otherwise, before anything is returned)."""
    if entry.length > _MAX_FILE:
        raise PackageError(f"larger than {_MAX_FILE} bytes", path=path)
    return b"".join(src.stream(path, entry, advance))


# --- 2-6. attest, release, fetch, decrypt ------------------------------------------------------


def package_tree(files: Mapping[str, bytes]) -> MemTree:
    """The nested in-memory tree the guest sees of a package's files."""
    root: dict[str, Any] = {}
    for path, data in files.items():
        *dirs, name = path.split("/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = data
    return root


def check_backend(backend: Backend, allow_insecure: bool) -> None:
    if (backend.name in INSECURE_BACKENDS or not backend.confidential) and not allow_insecure:
        raise UsageError(
            f"the {backend.name} backend is not confidential: the host can read the "
            "workload, its key and its secrets",
            hint="deploy to sev-snp, tdx or sgx, or pass --allow-insecure for a test",
        )


def prepare(req: DeployRequest, backend: Backend, *,
            on_phase: Callable[[str, float], None] | None = None,
            progress: Callable[[int], Callable[[int], None]] | None = None) -> Prepared:
    """Steps 1-6: the package decrypted and checked in memory, with its secrets.

    ``progress(total_bytes)`` (a download bar) is called when the fetch starts and returns
    the per-chunk ``advance(n)``."""
    from enarx.package import crypt

    clock = _Clock(on_phase)
    spec = check_transport(parse_spec(req.spec, default_host=req.default_host),
                           allow_insecure=req.allow_insecure)
    check_backend(backend, req.allow_insecure)
    with ExitStack() as stack:
        src: Source | None = None
        resolved: Any = None
        tree: Tree | None = None
        # a file:// package read once, unhashed, where its digests would check nothing
        raw = _local_files(spec, req)
        if raw is None:
            src, tree, resolved = stack.enter_context(_opened(spec, req))
        encrypted = (crypt.MANIFEST_NAME in raw if raw is not None
                     else tree is not None and crypt.is_encrypted(tree))
        manifest = manifest_raw = None
        identity: str | None = None
        if encrypted:
            name = crypt.MANIFEST_NAME
            if raw is not None:
                manifest_raw = raw[name]
            else:
                assert src is not None and tree is not None
                manifest_raw = _load(src, name, tree.files[name])
            manifest = crypt.read_manifest(manifest_raw)
            identity = manifest.identity  # checked against the decrypted files below
        elif tree is not None:
            tree.check_package()
            identity = tree.identity
        else:
            assert raw is not None and req.steward is None
            _check_plaintext(raw)  # nothing attests: the identity is computed on demand
        clock.lap("resolve")
        attested = None
        if req.steward is not None:
            from enarx.keep.attest import attest_keep
            from enarx.keep.signature import presented_signature

            signature = (presented_signature(src, resolved, manifest_raw)
                         if src is not None else None)  # file://: no signatures
            assert identity is not None
            attested = attest_keep(req.steward, backend, identity, signature=signature)
            print(f"enarx: attested to {req.steward.url}: package {identity}", file=sys.stderr,
                  flush=True)
        elif encrypted:
            raise UsageError(f"{spec.raw} is encrypted: only a steward releases its key",
                             hint="pass --steward URL --steward-ca PEM")
        clock.lap("attest")
        key = None
        if manifest is not None and attested is not None and req.steward is not None:
            from enarx.keep.release import ResourceRefused, fetch_resource

            key = fetch_resource(req.steward, attested, manifest.resource)
            if len(key) != crypt.KEY_SIZE:
                raise ResourceRefused("package.key", f"the steward resource {manifest.resource} "
                                      f"is not a {crypt.KEY_SIZE}-byte content key")
        clock.lap("key")
        if raw is not None:
            if progress is not None:  # read at resolve: report it whole
                total = sum(len(d) for d in raw.values())
                progress(total)(total)
        else:
            assert src is not None and tree is not None
            advance = progress(sum(e.length for e in tree.files.values())) if progress else None
            # a private drawbridge repo gives file contents only to the attested Keep's
            # certificate (keep/contents.py); other sources read on through ``src``
            from enarx.keep.contents import contents_source

            reader = contents_source(spec, _options(req), attested, src)
            try:
                raw = {p: _load(reader, p, e, advance) for p, e in sorted(tree.files.items())}
            finally:
                if reader is not src:
                    reader.close()
        clock.lap("fetch")
    if manifest is not None and key is not None:
        # every chunk authenticated; the recomputed plaintext identity equals the attested one
        files = crypt.decrypt_package(raw, key, manifest)
        _check_plaintext(files)
    else:
        files = raw  # each file matched the tree whose identity was attested
    clock.lap("decrypt")
    conf = _package_config(files)
    released = None
    if conf is not None and conf.secrets:
        if attested is None or req.steward is None:
            raise UsageError("the package's Enarx.toml declares [[secrets]], which only a "
                             "steward releases", hint="pass --steward URL --steward-ca PEM")
        from enarx.keep.release import release_secrets

        released = release_secrets(req.steward, attested, conf.secrets)
    clock.lap("secrets")
    return Prepared(known_identity=identity, files=files, config=conf, attested=attested,
                    encrypted=encrypted, released=released,
                    cache_key=(_cache_key(key, identity)
                               if key is not None and identity is not None else None))


def _check_plaintext(files: Mapping[str, bytes]) -> None:
    """The package is runnable: ``main.wasm`` at the root and an Enarx.toml of at most
    MAX_TOML_BYTES (the rules of ``Tree.check_package``, without hashing the files: after
    decryption decrypt_package just recomputed their identity; a plaintext ``file://``
    package without a steward needs none)."""
    from enarx.package.tree import MAX_TOML_BYTES

    if "main.wasm" not in files:
        raise PackageError("the package has no main.wasm at its root",
                           hint="a package is a directory with main.wasm, an optional "
                           "Enarx.toml and optional data files")
    if len(files.get("Enarx.toml", b"")) > MAX_TOML_BYTES:
        raise PackageError(f"Enarx.toml must be at most {MAX_TOML_BYTES} bytes",
                           path="Enarx.toml")


def _package_config(files: Mapping[str, bytes]) -> Any:
    data = files.get("Enarx.toml")
    if data is None:
        return None
    from enarx import config
    from enarx.errors import ConfigError

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path="Enarx.toml (in the package)") from None
    return config.loads(text, path="Enarx.toml (in the package)")


def _cache_key(key: bytes, identity: str) -> bytes:
    from enarx.keep.sealedcache import derive_cache_key

    return derive_cache_key(key, identity)


def _cache_for(ready: Prepared, backend: Backend, cache: ModuleCache | None
               ) -> ModuleCache | None:
    """Which compiled-module cache the run may use: for an encrypted package a sealed one
    under a key only this attested Keep has (any backend); for a plaintext package the
    user's cache, except on confidential backends (as ``enarx run``)."""
    if cache is None:
        return None
    if ready.encrypted:
        if ready.cache_key is None:
            return None
        from enarx.keep.sealedcache import SealedModuleCache

        return SealedModuleCache(cache.dir / "sealed", ready.cache_key)
    return None if backend.confidential else cache


class _Clock:
    def __init__(self, on_phase: Callable[[str, float], None] | None) -> None:
        self.on_phase = on_phase
        self.t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        if self.on_phase is not None:
            self.on_phase(phase, now - self.t)
        self.t = now


# --- 7. run -----------------------------------------------------------------------------------


def limits_for(config: Any, *, max_memory: int | None = None, timeout: float | None = None,
               fuel: int | None = None) -> RunLimits:
    """The flags over the package's Enarx.toml ``[limits]`` over the defaults."""
    from enarx.flags import DEFAULT_MAX_MEMORY, DEFAULT_TIMEOUT
    from enarx.runtime.run import RunLimits

    lim = config.limits if config is not None else None
    return RunLimits(
        max_memory=max_memory if max_memory is not None
        else (lim.max_memory if lim else DEFAULT_MAX_MEMORY),
        timeout=timeout if timeout is not None else (lim.timeout if lim else DEFAULT_TIMEOUT),
        fuel=fuel if fuel is not None else (lim.fuel if lim else None),
    )


def deploy(req: DeployRequest, *, limits: RunLimits | None = None,
           backend: Backend | None = None, stdio: tuple[int, int, int] = (0, 1, 2),
           cache: ModuleCache | None = None,
           on_compile: Callable[[int], Callable[[], None]] | None = None,
           on_phase: Callable[[str, float], None] | None = None,
           max_memory: int | None = None, timeout: float | None = None,
           fuel: int | None = None) -> int:
    """Deploy ``req`` and run it; the guest's exit code. ``limits`` default to the flags
    (``max_memory``, ``timeout``, ``fuel``) over the package's Enarx.toml
    (:func:`limits_for`). ``cache`` is the user's compiled-module cache (:func:`_cache_for`)."""
    from enarx import platform

    chosen = backend if backend is not None else platform.select(req.backend)
    ready = prepare(req, chosen, on_phase=on_phase)
    return run_prepared(ready, chosen, limits=limits, stdio=stdio, cache=cache,
                        on_compile=on_compile, on_phase=on_phase, max_memory=max_memory,
                        timeout=timeout, fuel=fuel)


def run_prepared(ready: Prepared, chosen: Backend, *, limits: RunLimits | None = None,
                 stdio: tuple[int, int, int] = (0, 1, 2), cache: ModuleCache | None = None,
                 on_compile: Callable[[int], Callable[[], None]] | None = None,
                 on_phase: Callable[[str, float], None] | None = None,
                 max_memory: int | None = None, timeout: float | None = None,
                 fuel: int | None = None) -> int:
    """Step 7: run a package :func:`prepare` made ready; the guest's exit code."""
    from enarx.keep.agent import Workload, run_workload

    if limits is None:
        limits = limits_for(ready.config, max_memory=max_memory, timeout=timeout, fuel=fuel)
    start = time.perf_counter()
    code = run_workload(
        Workload(wasm=ready.files["main.wasm"], argv0="main.wasm"),
        ready.config,
        chosen,
        limits=limits,
        cache=_cache_for(ready, chosen, cache),
        on_compile=on_compile,
        stdio=stdio,
        identity=ready.attested.identity() if ready.attested is not None else None,
        released=ready.released,
        package=package_tree(ready.files),
    )
    if on_phase is not None:
        on_phase("run", time.perf_counter() - start)
    return code
